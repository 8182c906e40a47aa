#!/usr/bin/env bash
# The SCIM figures of one node on PostgreSQL beside the embedded SQLite's,
# in the same run (BENCHMARKS.md, "SCIM on PostgreSQL"): for each backend a
# fresh release server over a fresh database, and ../shared/load/load.py
# against it (wrk for the lookups, PATCHes and timed creates). PostgreSQL is
# a throw-away local cluster (pg_virtualenv) with fsync and
# synchronous_commit on, on the same two cores as the server and the load.
#
#   scripts/bench-postgres.sh [POPULATION]     (default 10000)
#
# Results: target/bench-postgres-{sqlite,postgres}-<population>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
population="${1:-10000}"
cargo build --release
export BENCH_POPULATION="$population" BENCH_REPO="$PWD"
exec pg_virtualenv -t -o fsync=on -o synchronous_commit=on bash -c '
  set -euo pipefail
  cd "$BENCH_REPO"
  . scripts/listening.sh
  for backend in sqlite postgres; do
    dir=$(mktemp -d)
    if [ "$backend" = postgres ]; then
      psql -q -c "CREATE DATABASE rollcall_bench"
      db="postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/rollcall_bench"
    else
      db="$dir/bench.db"
    fi
    export ROLLCALL_DB="$db"
    ./target/release/rollcall tenant create bench >/dev/null 2>&1
    token=$(./target/release/rollcall token issue --tenant bench --scope scim 2>/dev/null)
    ROLLCALL_LOG=warn ./target/release/rollcall serve --listen 127.0.0.1:0 2>"$dir/server.log" &
    server=$!
    address=$(listening_address "$dir/server.log")
    python3 ../shared/load/load.py --base-url "http://$address/scim/v2" --token "$token" \
      --server-pid "$server" --users 2000 --population "$BENCH_POPULATION" --engine wrk \
      --wrk-threads 1 --out "target/bench-postgres-$backend-$BENCH_POPULATION.json"
    kill "$server"; wait "$server" || true
    rm -rf "$dir"
  done
'

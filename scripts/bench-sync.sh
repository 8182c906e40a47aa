#!/usr/bin/env bash
# Reproduces the Synchronize figures in BENCHMARKS.md: a fresh release
# server over a fresh database (durable writes), then scripts/bench_sync.py
# against it. Usage: scripts/bench-sync.sh [USERS [GROUPS]] (default
# 100000 users in 1000 groups).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/listening.sh
cargo build --release
dir=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
export ROLLCALL_DB="$dir/bench.db"
./target/release/rollcall tenant create bench >/dev/null 2>&1
scim=$(./target/release/rollcall token issue --tenant bench --scope scim 2>/dev/null)
admin=$(./target/release/rollcall token issue --tenant bench --scope admin 2>/dev/null)
ROLLCALL_LOG=warn ./target/release/rollcall serve --listen 127.0.0.1:0 \
  --scheduler-interval-seconds 0 --body-limit-bytes 8388608 2>"$dir/server.log" &
server=$!
address=$(listening_address "$dir/server.log")
# BENCH_POPULATE_INTO=FILE: only populate, stop the server, and keep the
# database there (scripts/bench-batch.sh times the CLI on it).
populate=()
[ -n "${BENCH_POPULATE_INTO:-}" ] && populate=(--populate-only)
python3 scripts/bench_sync.py --base-url "http://$address" --scim-token "$scim" \
  --admin-token "$admin" --server-pid "$server" --users "${1:-100000}" --groups "${2:-1000}" \
  "${populate[@]}"
if [ -n "${BENCH_POPULATE_INTO:-}" ]; then
  kill "$server"; wait "$server" || true
  cp "$dir/bench.db" "$BENCH_POPULATE_INTO"
fi

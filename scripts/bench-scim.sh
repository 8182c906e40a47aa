#!/usr/bin/env bash
# Reproduces the SCIM figures in BENCHMARKS.md: for each population, a fresh
# release server over a fresh database, and ../shared/load/load.py against
# it (wrk for the lookups, PATCHes and timed creates). Needs wrk
# (apt-get install -y wrk). Results: target/bench-scim-<population>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
. scripts/listening.sh
cargo build --release
for population in "${@:-10000 100000}"; do
  for n in $population; do
    dir=$(mktemp -d)
    start_bench_server "$dir"
    python3 ../shared/load/load.py --base-url "http://$address/scim/v2" --token "$token" \
      --server-pid "$server" --users 2000 --population "$n" --engine wrk --wrk-threads 1 \
      --out "target/bench-scim-$n.json"
    kill "$server"; wait "$server" || true
    rm -rf "$dir"
  done
done

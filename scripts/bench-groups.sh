#!/usr/bin/env bash
# Reproduces the large-group and deep-paging figures in BENCHMARKS.md: a
# fresh release server over a fresh database (durable writes), then
# scripts/bench_groups.py against it. Usage: scripts/bench-groups.sh [USERS]
# (default 100000; the users are created first, 8 at a time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/listening.sh
cargo build --release
dir=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
start_bench_server "$dir"
python3 scripts/bench_groups.py --base-url "http://$address/scim/v2" --token "$token" \
  --users "${1:-100000}"

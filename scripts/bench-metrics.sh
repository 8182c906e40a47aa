#!/usr/bin/env bash
# Reproduces the metrics-cost figures in BENCHMARKS.md: the same SCIM load
# (../shared/load/load.py with wrk: creates, lookups, PATCHes at 10,000
# users) against a fresh release server without metrics, and with
# `--metrics-listen` and a Prometheus-like scrape of /metrics every second
# through the run. Needs wrk. Results: target/bench-metrics-{off,on}.json,
# and the scrape times in target/bench-metrics-scrapes.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
. scripts/listening.sh
cargo build --release
: > target/bench-metrics-scrapes.txt
for mode in off on; do
  dir=$(mktemp -d)
  export ROLLCALL_DB="$dir/bench.db"
  ./target/release/rollcall tenant create bench >/dev/null 2>&1
  token=$(./target/release/rollcall token issue --tenant bench --scope scim 2>/dev/null)
  metrics=()
  [ "$mode" = on ] && metrics=(--metrics-listen 127.0.0.1:0)
  ROLLCALL_LOG=warn ./target/release/rollcall serve --listen 127.0.0.1:0 "${metrics[@]}" 2>"$dir/server.log" &
  server=$!
  address=$(listening_address "$dir/server.log")
  scraper=
  if [ "$mode" = on ]; then
    for _ in $(seq 1 100); do
      metrics_url=$(sed -n 's/^rollcall: metrics on //p' "$dir/server.log")
      [ -n "$metrics_url" ] && break
      sleep 0.1
    done
    (while sleep 1; do
      curl -s -o /dev/null -w '%{time_total}\n' "$metrics_url" >> target/bench-metrics-scrapes.txt
    done) &
    scraper=$!
  fi
  python3 ../shared/load/load.py --base-url "http://$address/scim/v2" --token "$token" \
    --server-pid "$server" --users 2000 --population 10000 --engine wrk --wrk-threads 1 \
    --out "target/bench-metrics-$mode.json"
  [ -n "$scraper" ] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
  kill "$server"; wait "$server" || true
  rm -rf "$dir"
done
sort -n target/bench-metrics-scrapes.txt | awk '{a[NR]=$1} END {print "scrapes:", NR, "median", a[int(NR/2)+1] "s", "max", a[NR] "s"}'

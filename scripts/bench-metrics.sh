#!/usr/bin/env bash
# Reproduces the metrics-cost figures in BENCHMARKS.md: the same SCIM load
# (../shared/load/load.py with wrk: creates, lookups, PATCHes at 10,000
# users) against a fresh release server without metrics, and with
# `--metrics-listen` and a Prometheus-like scrape of /metrics every second
# through the run, twice each in the order off, on, off, on (this VM drifts
# between minutes). Needs wrk. Results: target/bench-metrics-{off,on}-{1,2}.json,
# and the scrape times in target/bench-metrics-scrapes.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
. scripts/listening.sh
cargo build --release
: > target/bench-metrics-scrapes.txt
for run in off-1 on-1 off-2 on-2; do
  mode=${run%-*}
  dir=$(mktemp -d)
  metrics=()
  [ "$mode" = on ] && metrics=(--metrics-listen 127.0.0.1:0)
  start_bench_server "$dir" "${metrics[@]}"
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
    --out "target/bench-metrics-$run.json"
  [ -n "$scraper" ] && { kill "$scraper"; wait "$scraper" 2>/dev/null || true; }
  kill "$server"; wait "$server" || true
  rm -rf "$dir"
done
sort -n target/bench-metrics-scrapes.txt | awk '{a[NR]=$1} END {print "scrapes:", NR, "median", a[int(NR/2)+1] "s", "max", a[NR] "s"}'
python3 - <<'PY'
import json
runs = ("off-1", "on-1", "off-2", "on-2")
phases = {}
for run in runs:
    with open(f"target/bench-metrics-{run}.json") as f:
        for phase in json.load(f)["phases"]:
            phases.setdefault(phase["phase"], {})[run] = phase["ok_per_s"]
for name, rates in phases.items():
    off = (rates["off-1"] + rates["off-2"]) / 2
    on = (rates["on-1"] + rates["on-2"]) / 2
    shown = "  ".join(f"{run} {rates[run]:8.1f}/s" for run in runs)
    print(f"{name:14} {shown}  on/off {on / off:.3f}")
PY

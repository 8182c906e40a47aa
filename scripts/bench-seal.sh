#!/usr/bin/env bash
# What sealing personal values costs durable SCIM writes (issue 21), as
# BENCHMARKS.md's "Sealing" section was measured:
#   scripts/bench-seal.sh OLD_BIN NEW_BIN [POPULATION]     (default 20,000)
# Each build in turn, two rounds, on a fresh empty database each time: a
# server (durability full) and ../shared/load/load.py creating POPULATION
# users, then `wrk -t1 -c8` creates and PATCHes of distinct ids
# (`--engine wrk`, 8 s each); then, the server stopped, `verify` and
# `rebuild` of the database that run wrote. Prints each run's ok
# requests/s and p99 and each fold's seconds, and each build's mean.
# Needs wrk and bc (apt-get installs them when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || apt-get install -y wrk
command -v bc >/dev/null || apt-get install -y bc
. scripts/listening.sh
[ $# -ge 2 ] || { echo "usage: scripts/bench-seal.sh OLD_BIN NEW_BIN [POPULATION]" >&2; exit 2; }
old="$1" new="$2" population="${3:-20000}"
work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

run() {
  local bin="$1" label="$2" round="$3" dir
  dir=$(mktemp -d -p "$work")
  export ROLLCALL_DB="$dir/bench.db"
  "$bin" tenant create bench >/dev/null 2>&1
  token=$("$bin" token issue --tenant bench --scope scim 2>/dev/null)
  ROLLCALL_LOG=warn ROLLCALL_DURABILITY=full "$bin" serve --listen 127.0.0.1:0 2>"$dir/server.log" &
  server=$!
  address=$(listening_address "$dir/server.log")
  python3 ../shared/load/load.py --base-url "http://$address/scim/v2" --token "$token" \
    --server-pid "$server" --users 2000 --population "$population" --phases create,patch \
    --engine wrk --wrk-threads 1 --wrk-seconds 8 --phase-seconds 600 \
    --out "$work/$label-$round.json" >/dev/null
  kill "$server"
  wait "$server" || true
  server=""
  # The folds over what this build wrote: one hashed pass, and a rebuild
  # of every projection (each build reads its own log: the old one cannot
  # open sealed events).
  sync
  local started ended
  started=$(date +%s.%N)
  "$bin" verify >/dev/null
  ended=$(date +%s.%N)
  echo "$label $round verify $(echo "$ended - $started" | bc)" >>"$work/folds.txt"
  started=$(date +%s.%N)
  "$bin" rebuild >/dev/null 2>&1
  ended=$(date +%s.%N)
  echo "$label $round rebuild $(echo "$ended - $started" | bc)" >>"$work/folds.txt"
  rm -rf "$dir"
}

for round in 1 2; do
  run "$old" old "$round"
  run "$new" new "$round"
done
python3 - "$work" <<'PY'
import json, sys, statistics
work = sys.argv[1]
phases = ["create-wrk-c8", "patch-wrk-c8"]
means = {}
for label in ("old", "new"):
    for round in (1, 2):
        report = json.load(open(f"{work}/{label}-{round}.json"))
        by = {p["phase"]: p for p in report["phases"]}
        cells = []
        for name in phases:
            p = by[name]
            means.setdefault((label, name), []).append(p["ok_per_s"])
            errors = ",".join(f"{k}={v}" for k, v in p["errors"].items())
            cells.append(f"{name} {p['ok_per_s']:8.1f}/s p99 {p['p99_ms']:6.1f} ms {errors}")
        print(f"{label} round {round}: " + " | ".join(cells))
for name in phases:
    a = statistics.mean(means[("old", name)])
    b = statistics.mean(means[("new", name)])
    print(f"{name}: old {a:.1f}/s, new {b:.1f}/s, new/old {b / a:.3f}")
folds = {}
for line in open(f"{work}/folds.txt"):
    label, round, command, seconds = line.split()
    folds.setdefault((label, command), []).append(float(seconds))
    print(f"{label} round {round}: {command} {float(seconds):.2f} s")
for command in ("verify", "rebuild"):
    a = statistics.mean(folds[("old", command)])
    b = statistics.mean(folds[("new", command)])
    print(f"{command}: old {a:.2f} s, new {b:.2f} s, new/old {b / a:.3f}")
PY

#!/usr/bin/env bash
# Lookups of two or more builds on copies of one database, alternating, as
# BENCHMARKS.md's read-cache table was measured: `scripts/bench-ab.sh BIN[:FLAGS]...`
# (e.g. `/tmp/rollcall-old ./target/release/rollcall "./target/release/rollcall:--read-cache-mib 0"`).
# The first build populates a fresh database with BENCH_AB_USERS users (20,000)
# through load.py; then each build, twice in turn, serves a copy of it to
# `wrk -t1 -c8` lookups of random users (4 s warm-up, 10 s measured). Prints
# requests/s, p99, server CPU-microseconds per request and peak RSS. Needs
# wrk and sqlite3 (apt-get installs them when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || apt-get install -y wrk
command -v sqlite3 >/dev/null || apt-get install -y sqlite3
. scripts/listening.sh
[ $# -ge 1 ] || { echo "usage: scripts/bench-ab.sh BIN[:FLAGS]..." >&2; exit 2; }
users=${BENCH_AB_USERS:-20000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# `serve_copy BIN FLAGS`: a server of BIN on a copy of the populated database.
serve_copy() {
  local bin="$1" flags="$2" dir
  dir=$(mktemp -d -p "$work")
  cp "$work/bench.db" "$dir/"
  export ROLLCALL_DB="$dir/bench.db"
  token=$("$bin" token issue --tenant bench --scope scim 2>/dev/null)
  # shellcheck disable=SC2086
  ROLLCALL_LOG=warn "$bin" serve --listen 127.0.0.1:0 $flags 2>"$dir/server.log" &
  server=$!
  address=$(listening_address "$dir/server.log")
}

first=${1%%:*}
populate_bench_db "$first" "$work" "$users"
sqlite3 "$work/bench.db" "SELECT name FROM scim_resources WHERE kind = 'User'" >"$work/names.txt"

export SCIM_MODE=lookup SCIM_PREFIX=/scim/v2 SCIM_FILE="$work/names.txt"
for _ in 1 2; do
  for spec in "$@"; do
    bin=${spec%%:*}
    flags=""
    [ "$bin" = "$spec" ] || flags=${spec#*:}
    serve_copy "$bin" "$flags"
    export SCIM_TOKEN="$token"
    wrk -t1 -c8 -d4s -s ../shared/load/scim_wrk.lua "http://$address" >/dev/null
    before=$(awk '{print $14 + $15}' "/proc/$server/stat")
    result=$(wrk -t1 -c8 -d10s -s ../shared/load/scim_wrk.lua "http://$address" | grep WRKJSON)
    after=$(awk '{print $14 + $15}' "/proc/$server/stat")
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
    python3 - "$result" $((after - before)) "$spec" "$rss" "$(getconf CLK_TCK)" <<'PY'
import json, sys
totals = json.loads(sys.argv[1].split(" ", 1)[1])
ticks, spec, rss_kib, hz = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
rate = totals["requests"] / (totals["duration_us"] / 1e6)
cpu_us = ticks * 1e6 / hz / totals["requests"]
print(f"{spec:48s} {rate:9,.0f}/s  p99 {totals['p99_us'] / 1000:.2f} ms  "
      f"{cpu_us:.1f} server CPU-us/request  non-2xx {totals['non2xx']}  peak RSS {rss_kib // 1024} MiB")
PY
    kill "$server"; wait "$server" || true
  done
done

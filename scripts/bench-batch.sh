#!/usr/bin/env bash
# Issue 20's batch figures, both sides of every ratio from one run: a
# release server populates 100,000 users with ten mapped attributes in
# 1,000 bound groups (scripts/bench_sync.py --populate-only), stops, and
# the CLI then times on copies of that one database, each copy settled on
# disk first: `verify` (the floor), `sync --preview`, `sync` (every join,
# durable), `sync` with nothing pending, `rebuild` of every projection;
# each with its peak RSS (/usr/bin/time); then the floors under them
# (examples/write_floor.rs). Usage: scripts/bench-batch.sh
# [USERS [GROUPS]]. Output: one line per command, then the ratios. With
# BENCH_KEEP_DB=FILE the populated database (before any Synchronize) is
# kept there, for profiling.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
BENCH_POPULATE_INTO="$dir/bench.db" scripts/bench-sync.sh "$@"
export ROLLCALL_DB="$dir/bench.db"
events=$(./target/release/rollcall verify --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_checked"])')
echo "database: $(du -m "$dir/bench.db" | cut -f1) MB, $events events"
if [ -n "${BENCH_KEEP_DB:-}" ]; then
  cp "$dir/bench.db" "$BENCH_KEEP_DB"
fi
# One timed command on a fresh copy: prints "NAME SECONDS PEAK_MIB".
timed() {
  local name="$1"
  shift
  rm -f "$dir/copy.db"*
  cp "$dir/bench.db" "$dir/copy.db"
  sync
  /usr/bin/time -f "%e %M" -o "$dir/time" ./target/release/rollcall --db "$dir/copy.db" "$@" >/dev/null 2>"$dir/err" \
    || { cat "$dir/err"; exit 1; }
  read -r seconds kib < "$dir/time"
  printf '%-14s %7.2f s  %6.1f MiB\n' "$name" "$seconds" "$(echo "$kib / 1024" | bc -l)"
  echo "$name $seconds" >> "$dir/results"
}
: > "$dir/results"
timed verify verify
timed preview sync --tenant bench --preview
timed sync sync --tenant bench
# Nothing pending: a run on a copy already synchronized.
cp "$dir/bench.db" "$dir/before.db"
./target/release/rollcall --db "$dir/bench.db" sync --tenant bench >/dev/null 2>&1
timed sync-noop sync --tenant bench
timed rebuild rebuild
# The floors (examples/write_floor.rs): storing only the rows the
# Synchronize and the rebuild produced, durably, with nothing decided or
# folded; reading and parsing every user's document, which deciding
# each user starts with; and reading and decoding every event, which any
# fold (a rebuild, a cold as-of) starts with.
cargo build --release --example write_floor 2>/dev/null
floor=./target/release/examples/write_floor
sync
printf 'floor of sync:     %s\n' "$("$floor" sync "$dir/before.db" "$dir/bench.db" 2>/dev/null)"
printf 'floor of rebuild:  %s\n' "$("$floor" rebuild "$dir/bench.db" 2>/dev/null)"
printf 'floor of preview:  %s\n' "$("$floor" parse "$dir/before.db")"
printf 'floor of a fold:   %s\n' "$("$floor" decode "$dir/bench.db")"
python3 - "$dir/results" <<'PY'
import sys
times = dict(line.split() for line in open(sys.argv[1]))
verify = float(times["verify"])
for name in ("preview", "sync", "rebuild"):
    print(f"{name:10} {float(times[name]) / verify:6.1f}x verify")
print(f"sync-noop  {float(times['sync-noop']) * 1000:6.0f} ms (process start included)")
PY

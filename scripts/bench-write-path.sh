#!/usr/bin/env bash
# Where a durable SCIM write goes at a large population, as BENCHMARKS.md's
# "Issue 20: where a write at 100,000 users goes" was measured:
#   scripts/bench-write-path.sh [USERS]          (default 100,000)
# Populates one database through load.py, then, on a fresh copy of it per run,
# alternates the durability modes of BENCH_WRITE_MODES ("full off") over two
# rounds: `wrk -t1 -c8` PATCHes of distinct ids, then creates, for
# BENCH_WRITE_SECONDS (8) each. Each run prints requests/s, p99, server
# CPU-microseconds and bytes written per request, commands per commit, and the
# share of the run the writer spent inside COMMIT (the WAL's write and fsync),
# from the server's own metrics. Last, 20 creates and 20 PATCHes one at a time
# (one commit each) and the B-tree of every WAL frame they wrote, and a probe
# of the disk alone (scattered page writes and fsync). Needs wrk,
# sqlite3 and curl (apt-get installs them when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || apt-get install -y wrk
command -v sqlite3 >/dev/null || apt-get install -y sqlite3
command -v curl >/dev/null || apt-get install -y curl
. scripts/listening.sh
users=${1:-100000}
modes=${BENCH_WRITE_MODES:-full off}
seconds=${BENCH_WRITE_SECONDS:-8}
bin=./target/release/rollcall
cargo build --release --bin rollcall
work=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

populate_bench_db "$bin" "$work" "$users"
sqlite3 "$work/bench.db" "SELECT id FROM scim_resources WHERE kind = 'User' ORDER BY random()" >"$work/ids.txt"
echo "populated $users users: $(du -m "$work/bench.db" | cut -f1) MiB"

# `serve_copy MODE`: a server on a fresh copy of the populated database, its
# metrics on a listener of their own; sets `server`, `address`, `metrics`, `run`.
serve_copy() {
  run=$(mktemp -d -p "$work")
  cp "$work/bench.db" "$run/"
  export ROLLCALL_DB="$run/bench.db"
  token=$("$bin" token issue --tenant bench --scope scim 2>/dev/null)
  ROLLCALL_LOG=warn ROLLCALL_DURABILITY="$1" "$bin" serve --listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 2>"$run/server.log" &
  server=$!
  address=$(listening_address "$run/server.log")
  metrics=""
  for _ in $(seq 1 100); do
    metrics=$(sed -n 's|^rollcall: metrics on http://\([^ /]*\).*$|\1|p' "$run/server.log")
    [ -z "$metrics" ] || return 0
    sleep 0.1
  done
  echo "the metrics listener did not start" >&2
  return 1
}

# `counters`: the server's CPU ticks, bytes it wrote, and its writer's metrics.
counters() {
  awk '{printf "%s ", $14 + $15}' "/proc/$server/stat"
  awk '/^wchar/ {printf "%s ", $2}' "/proc/$server/io"
  curl -s "http://$metrics/metrics" | awk '
    /^rollcall_writer_batch_commands_sum/ {c=$2} /^rollcall_writer_batch_commands_count/ {b=$2}
    /^rollcall_writer_commit_seconds_sum/ {s=$2} END {printf "%s %s %s", c+0, b+0, s+0}'
}

for round in 1 2; do
  for mode in $modes; do
    for phase in patch create; do
      serve_copy "$mode"
      export SCIM_MODE=$phase SCIM_PREFIX=/scim/v2 SCIM_TOKEN="$token" SCIM_RUN="w$round$mode"
      if [ "$phase" = patch ]; then export SCIM_FILE="$work/ids.txt"; else export SCIM_FILE=""; fi
      before=$(counters)
      result=$(wrk -t1 -c8 -d"${seconds}s" -s ../shared/load/scim_wrk.lua "http://$address" | grep WRKJSON)
      after=$(counters)
      python3 - "$result" "$before" "$after" "$round $mode $phase" "$(getconf CLK_TCK)" <<'PY'
import json, sys
totals = json.loads(sys.argv[1].split(" ", 1)[1])
before, after = (list(map(float, text.split())) for text in sys.argv[2:4])
ticks, wchar, commands, batches, commit_s = (b - a for a, b in zip(before, after))
n, seconds = totals["requests"], totals["duration_us"] / 1e6
print(f"round {sys.argv[4]:22s} {n / seconds:8,.0f}/s  p99 {totals['p99_us'] / 1000:6.2f} ms  "
      f"{ticks * 1e6 / int(sys.argv[5]) / n:6.1f} CPU-us  {wchar / n / 1024:5.1f} KiB written  "
      f"{commands / max(batches, 1):4.1f} per commit  COMMIT {100 * commit_s / seconds:4.1f} % of the run  "
      f"non-2xx {totals['non2xx']}")
PY
      kill "$server"; wait "$server" || true
      rm -rf "$run"
    done
  done
done

# One request per commit: which B-tree each WAL frame it wrote belongs to.
serve_copy full
python3 - "$address" "$token" "$work/ids.txt" "$run/bench.db-wal" "$run/frames" <<'PY'
import json, os, struct, sys, time, urllib.request
address, token, ids_file, wal, out = sys.argv[1:6]
ids = [line.strip() for line in open(ids_file)][:20]

def frames():
    if not os.path.exists(wal):
        return []
    data, pages, offset = open(wal, "rb").read(), [], 32
    while offset + 24 + 4096 <= len(data):
        pages.append(struct.unpack(">I", data[offset:offset + 4])[0])
        offset += 24 + 4096
    return pages

def send(method, path, body):
    request = urllib.request.Request(f"http://{address}/scim/v2{path}", json.dumps(body).encode(), method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/scim+json")
    urllib.request.urlopen(request).read()

for phase in ("create", "patch"):
    start = len(frames())
    for i in range(20):
        if phase == "create":
            name = f"wal-probe-{i}-{time.time_ns()}"
            send("POST", "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                 "userName": name, "name": {"givenName": "Wal", "familyName": "Probe"},
                 "emails": [{"value": f"{name}@example.com", "type": "work", "primary": True}]})
        else:
            send("PATCH", f"/Users/{ids[i]}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                 "Operations": [{"op": "replace", "path": "active", "value": False}]})
    with open(f"{out}.{phase}", "w") as file:
        file.write("\n".join(str(page) for page in frames()[start:]) + "\n")
PY
for phase in create patch; do
  echo "WAL frames of 20 requests ($phase), one commit each, by B-tree:"
  sqlite3 "file:$run/bench.db?mode=ro" "CREATE TEMP TABLE frames (page INTEGER)" \
    ".import $run/frames.$phase frames" \
    "SELECT printf('  %-34s %5.2f per request', d.name, count(*) / 20.0) FROM temp.frames f \
     JOIN dbstat d ON d.pageno = f.page GROUP BY d.name ORDER BY count(*) DESC"
done
kill "$server"; wait "$server" || true

# The disk itself, outside rollcall: what a checkpoint of 1,000 scattered
# pages costs in a file the database's size, and a small in-place WAL sync.
python3 - "$work/disk-probe" "$(stat -c %s "$work/bench.db")" <<'PY'
import os, random, sys, time
path, size = sys.argv[1], int(sys.argv[2]) // 4096 * 4096
fd = os.open(path, os.O_CREAT | os.O_RDWR)
for offset in range(0, size, 1 << 20):
    os.pwrite(fd, b"z" * min(1 << 20, size - offset), offset)
os.fsync(fd)
random.seed(1)
page, times = b"y" * 4096, []
for _ in range(20):
    start = time.perf_counter()
    for offset in sorted(random.randrange(size // 4096) * 4096 for _ in range(1000)):
        os.pwrite(fd, page, offset)
    os.fsync(fd)
    times.append(time.perf_counter() - start)
times.sort()
print(f"disk: 1,000 random 4 KiB pages + fsync in a {size >> 20} MiB file: median "
      f"{times[10] * 1000:.1f} ms ({times[0] * 1000:.1f}-{times[-1] * 1000:.1f})")
start = time.perf_counter()
for i in range(2000):
    os.pwrite(fd, page * 4, (i % 200) * 16384)
    os.fsync(fd)
print(f"disk: 16 KiB written in place + fsync: {(time.perf_counter() - start) / 2000 * 1e6:.0f} us")
os.close(fd)
os.unlink(path)
PY

#!/usr/bin/env bash
# Measures rollcall side by side with the python peer of
# ../shared/load/README.md (scim2-server 0.8.3 under uvicorn) in one run:
# for each population, ../shared/load/load.py against a fresh peer, then
# against a fresh release server over a fresh database, with the same
# arguments, then a table of the two and their ratio rollcall/peer (lookup,
# create and PATCH at c8, peak RSS). Usage: scripts/bench-peer.sh
# [POPULATION...] (default 100000). Results:
# target/bench-peer-{peer,rollcall}-<population>.json.
#
# The peer lives in a venv, target/peer-venv (made on the first run, with
# pip), and is scim2-server's own ASGI application under uvicorn (with httptools
# and uvloop, as uvicorn[standard] installs them), with a
# random bearer token (scripts/bench_peer.py). wrk comes from apt-get when it
# is missing. The rollcall side runs cargo build --release first, as
# bench-scim.sh does.
#
# BENCH_PEER_SIDES (default "peer rollcall") picks the sides to run: a side
# left out keeps the JSON of its last run, which the table shows.
# BENCH_PEER_LOAD_ARGS adds load.py arguments to both sides (after the
# defaults, so they override them): BENCH_PEER_LOAD_ARGS="--users 500
# --wrk-seconds 5" scripts/bench-peer.sh 3000 is a quick check.
#
# The phase cap is 600 s, not load.py's 100 s: the peer creates about 800
# users/s, so at 100,000 users the populate phase would stop short of the
# population (the table warns when a side has fewer users than asked).
# rollcall never comes near either cap.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sides="${BENCH_PEER_SIDES:-peer rollcall}"
read -r -a extra_args <<<"${BENCH_PEER_LOAD_ARGS:-}"
command -v wrk >/dev/null || apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
. scripts/listening.sh

venv=target/peer-venv
if [[ " $sides " == *" peer "* ]]; then
  if ! "$venv/bin/python" -c 'import importlib.metadata as m, uvicorn, httptools, uvloop; assert m.version("scim2-server") == "0.8.3"' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q scim2-server==0.8.3 "uvicorn[standard]"
  fi
  "$venv/bin/python" -c 'import importlib.metadata as m; print("peer:", *(f"{p} {m.version(p)}" for p in ("scim2-server", "uvicorn")))'
fi
if [[ " $sides " == *" rollcall "* ]]; then
  cargo build --release
fi

# `start_peer DIR`: scim2-server under uvicorn on a free port of 127.0.0.1
# (its log in DIR/peer.log); sets `token`, `server` and `address`, as
# start_bench_server does.
start_peer() {
  local dir="$1"
  token=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
  BENCH_PEER_TOKEN="$token" "$venv/bin/uvicorn" --app-dir scripts --factory bench_peer:peer_app \
    --host 127.0.0.1 --port 0 --no-access-log >"$dir/peer.log" 2>&1 &
  server=$!
  address=""
  for _ in $(seq 1 600); do
    address="$(sed -n 's|^INFO: *Uvicorn running on http://\([^ ]*\) (Press CTRL+C to quit)$|\1|p' "$dir/peer.log")"
    [ -n "$address" ] && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  echo "the peer did not start:" >&2
  cat "$dir/peer.log" >&2
  return 1
}

server=""
dir=""
trap '[ -z "$server" ] || kill "$server" 2>/dev/null || true; [ -z "$dir" ] || rm -rf "$dir"' EXIT
tables=()
for population in "${@:-100000}"; do
  for n in $population; do
    for side in $sides; do
      dir=$(mktemp -d)
      case "$side" in
        peer) start_peer "$dir"; base="http://$address/v2" ;;
        rollcall) start_bench_server "$dir"; base="http://$address/scim/v2" ;;
        *) echo "unknown side in BENCH_PEER_SIDES: $side" >&2; exit 1 ;;
      esac
      out="target/bench-peer-$side-$n.json"
      rm -f "$out"
      echo "== $side, $n users: $base (pid $server)"
      python3 ../shared/load/load.py --base-url "$base" --token "$token" \
        --server-pid "$server" --users 2000 --population "$n" --engine wrk --wrk-threads 1 \
        --phase-seconds 600 "${extra_args[@]}" --out "$out"
      kill "$server"; wait "$server" || true
      server=""
      rm -rf "$dir"
      dir=""
    done
    tables+=("target/bench-peer-peer-$n.json" "target/bench-peer-rollcall-$n.json")
  done
done
python3 scripts/bench_peer.py "${tables[@]}"

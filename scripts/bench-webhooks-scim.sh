#!/usr/bin/env bash
# SCIM create and PATCH throughput (../shared/load) with no webhook
# endpoint, then with one that is down (connection refused, retried every
# 100 ms with a backlog waiting), each on a fresh release server over a
# fresh database (durable writes), alternated twice (BENCHMARKS.md). Needs
# wrk. Results: target/bench-webhooks-scim-<case>-<round>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
. scripts/listening.sh
cargo build --release --bin rollcall
rollcall=./target/release/rollcall
dead=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
for round in 1 2; do
  for case in none dead; do
    dir=$(mktemp -d)
    export ROLLCALL_DB="$dir/bench.db"
    $rollcall tenant create bench >/dev/null 2>&1
    token=$($rollcall token issue --tenant bench --scope scim 2>/dev/null)
    admin=$($rollcall token issue --tenant bench --scope admin 2>/dev/null)
    ROLLCALL_LOG=warn $rollcall serve --listen 127.0.0.1:0 --scheduler-interval-seconds 0 \
      --webhook-allow-private-targets --webhook-retry-schedule 100ms 2>"$dir/server.log" &
    server=$!
    address=$(listening_address "$dir/server.log")
    if [ "$case" = dead ]; then
      $rollcall webhook create --tenant bench --url "http://127.0.0.1:$dead/hooks" \
        --allow-private-targets >/dev/null 2>&1
      # A backlog for it: 100 members joined, so it is failing all along.
      for i in $(seq 1 100); do
        curl -s -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/scim+json' \
          -d "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"backlog$i\"}" \
          "http://$address/scim/v2/Users"
      done
      curl -s -o /dev/null -X POST -H "Authorization: Bearer $admin" "http://$address/api/v1/provisioning/sync"
    fi
    python3 ../shared/load/load.py --base-url "http://$address/scim/v2" --token "$token" \
      --server-pid "$server" --users 2000 --population 10000 --phases create,patch \
      --engine wrk --wrk-threads 1 --out "target/bench-webhooks-scim-$case-$round.json"
    if [ "$case" = dead ]; then
      curl -s -H "Authorization: Bearer $admin" "http://$address/api/v1/webhooks" \
        | python3 -c 'import json,sys; d=json.load(sys.stdin)["webhooks"][0]["delivery"]; print("dead endpoint:", d["attempts"], "failed tries, last:", d["last_error"])'
    fi
    kill "$server"; wait "$server" || true
    rm -rf "$dir"
  done
done

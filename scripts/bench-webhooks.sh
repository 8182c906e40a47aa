#!/usr/bin/env bash
# Reproduces the event feed and webhook figures in BENCHMARKS.md: a fresh
# release server over a fresh database (durable writes), the example
# receiver (which verifies every signature), two endpoints to it, and
# scripts/bench_webhooks.py. Usage: scripts/bench-webhooks.sh [USERS]
# (default 100000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/listening.sh
cargo build --release --bin rollcall --example receiver
dir=$(mktemp -d)
trap 'kill "$server" "$receiver" 2>/dev/null || true; rm -rf "$dir"' EXIT
export ROLLCALL_DB="$dir/bench.db"
rollcall=./target/release/rollcall
$rollcall tenant create bench >/dev/null 2>&1
scim=$($rollcall token issue --tenant bench --scope scim 2>/dev/null)
admin=$($rollcall token issue --tenant bench --scope admin 2>/dev/null)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port/hooks"
one=$($rollcall webhook create --tenant bench --url "$url" --description "one per request" --allow-private-targets 2>/dev/null)
batched=$($rollcall webhook create --tenant bench --url "$url" --description "batches of 100" --batch --allow-private-targets 2>/dev/null)
./target/release/examples/receiver --listen "127.0.0.1:$port" --secret "$one" --secret "$batched" --quiet 2>"$dir/receiver.log" &
receiver=$!
ROLLCALL_LOG=warn $rollcall serve --listen 127.0.0.1:0 --scheduler-interval-seconds 0 \
  --body-limit-bytes 8388608 --webhook-allow-private-targets 2>"$dir/server.log" &
server=$!
address=$(listening_address "$dir/server.log")
python3 scripts/bench_webhooks.py --base-url "http://$address" --scim-token "$scim" \
  --admin-token "$admin" --receiver-url "$url" --users "${1:-100000}"

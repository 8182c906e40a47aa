# Sourced by the scripts that start a server: `listening_address LOG` waits
# (up to 60 s) for the line the server writes once it accepts connections,
# in one write, and prints its host:port; without it, it prints the log and
# fails. Waiting for the line, not a fixed sleep, is what makes a slow start
# (a cold page cache, a migration) harmless.
listening_address() {
  local log="$1" address=""
  for _ in $(seq 1 600); do
    address="$(sed -n 's|^rollcall: listening on https\{0,1\}://\([^ ]*\)  (SCIM base URL .*)$|\1|p' "$log")"
    if [ -n "$address" ]; then
      echo "$address"
      return 0
    fi
    sleep 0.1
  done
  echo "the server did not start:" >&2
  cat "$log" >&2
  return 1
}

# `start_bench_server DIR [serve flags...]`: a fresh database in DIR with a
# tenant `bench` and a scim token, and a release server on it (its log in
# DIR/server.log); sets `token`, `server` (the pid) and `address`
# (host:port) for the benchmark that sourced this.
start_bench_server() {
  local dir="$1"
  shift
  export ROLLCALL_DB="$dir/bench.db"
  ./target/release/rollcall tenant create bench >/dev/null 2>&1
  token=$(./target/release/rollcall token issue --tenant bench --scope scim 2>/dev/null)
  ROLLCALL_LOG=warn ./target/release/rollcall serve --listen 127.0.0.1:0 "$@" 2>"$dir/server.log" &
  server=$!
  address=$(listening_address "$dir/server.log")
}

# `populate_bench_db BIN DIR USERS`: DIR/bench.db with a tenant `bench` of
# USERS users, created through load.py against a server of BIN that is
# stopped again; sets `token` (a scim token of the tenant).
populate_bench_db() {
  local bin="$1" dir="$2" users="$3" server address
  export ROLLCALL_DB="$dir/bench.db"
  "$bin" tenant create bench >/dev/null 2>&1
  token=$("$bin" token issue --tenant bench --scope scim 2>/dev/null)
  ROLLCALL_LOG=warn "$bin" serve --listen 127.0.0.1:0 2>"$dir/populate.log" &
  server=$!
  address=$(listening_address "$dir/populate.log")
  python3 ../shared/load/load.py --base-url "http://$address/scim/v2" --token "$token" \
    --server-pid "$server" --users 100 --population "$users" --phases lookup --engine python \
    --lookups 100 --phase-seconds 900 --out "$dir/populate.json" >/dev/null
  kill "$server"
  wait "$server" || true
}

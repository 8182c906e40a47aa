#!/usr/bin/env bash
# The SCIM conformance suites (../shared/conformance) against a rollcall
# backed by PostgreSQL: a throw-away cluster from Debian's PostgreSQL
# (pg_virtualenv, fsync on), a fresh database in it, a tenant and a token
# made with the CLI over the same URL, then `serve` and both suites.
#
#   scripts/conformance-postgres.sh [BINARY]   (default target/release/rollcall)
#
# Run as root, or with pg_virtualenv able to make a cluster; installs
# PostgreSQL with apt-get where it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
binary="$(realpath "${1:-target/release/rollcall}")"
if ! command -v pg_virtualenv >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "conformance-postgres: installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql postgresql-common >/dev/null
fi
export ROLLCALL_BINARY="$binary" ROLLCALL_REPO="$PWD"
exec pg_virtualenv -t -o fsync=on bash -c '
  set -euo pipefail
  . "$ROLLCALL_REPO/scripts/listening.sh"
  workdir="$(mktemp -d)"
  psql -q -c "CREATE DATABASE rollcall_conformance"
  export ROLLCALL_DB="postgres://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/rollcall_conformance"
  "$ROLLCALL_BINARY" tenant create conformance >/dev/null
  token="$("$ROLLCALL_BINARY" token issue --tenant conformance --scope scim 2>/dev/null)"
  "$ROLLCALL_BINARY" serve --listen 127.0.0.1:0 2>"$workdir/server.log" &
  server_pid=$!
  trap "kill $server_pid 2>/dev/null; wait $server_pid 2>/dev/null || true" EXIT
  address=$(listening_address "$workdir/server.log")
  status=0
  bash "$ROLLCALL_REPO/../shared/conformance/run-conformance.sh" "http://$address/scim/v2" "$token" \
    "$ROLLCALL_REPO/target/conformance-postgres" || status=$?
  if grep -q " ERROR " "$workdir/server.log"; then
    echo "conformance-postgres: the server logged errors:"
    grep " ERROR " "$workdir/server.log" | head -20
    status=1
  fi
  exit $status
'

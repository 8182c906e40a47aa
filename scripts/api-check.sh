#!/usr/bin/env bash
# The /api/v1 contract against a live server: starts a fresh rollcall on a
# temporary database, gives it a little of everything (users and a group
# over SCIM, a Synchronize, a webhook endpoint), then runs schemathesis
# (PyPI) over every operation of the server's own /api/v1/openapi.json:
# generated valid and invalid inputs, every answer checked against the
# document (status, content type, headers, schema) and never a 5xx.
#
#   scripts/api-check.sh [BINARY]     (default target/release/rollcall)
#
# Installs schemathesis into target/schemathesis-venv on first use.
# Environment: API_CHECK_EXAMPLES (cases per operation, default 40),
# API_CHECK_SEED (the Hypothesis seed; fixed at 1 so CI is repeatable: try
# others by hand), API_CHECK_EXTRA (more schemathesis arguments, e.g.
# "--phases coverage"), API_CHECK_KEEP=1 (keep the database and server log).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
binary="${1:-target/release/rollcall}"
venv="target/schemathesis-venv"
version="4.32.5"
read -r -a API_CHECK_ARGS <<< "${API_CHECK_EXTRA:-}"
if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  echo "api-check: installing python3-venv"
  apt-get update -qq && apt-get install -y -qq python3-venv
fi
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  echo "api-check: installing schemathesis $version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
fi

workdir="$(mktemp -d)"
export ROLLCALL_DB="$workdir/api.db"
"$binary" tenant create acme >/dev/null
admin="$("$binary" token issue --tenant acme --scope admin)"
scim="$("$binary" token issue --tenant acme --scope scim)"
"$binary" token issue --tenant acme --scope audit --label spare >/dev/null
API_CHECK_SPARE_TOKEN="$("$binary" token list --tenant acme | awk '$NF == "spare" { print $1 }')"
export API_CHECK_SPARE_TOKEN
# Private targets allowed: the generated webhook URLs name hosts that do
# not resolve here, and the seeded endpoint is on loopback.
"$binary" serve --listen 127.0.0.1:0 --webhook-allow-private-targets \
  --webhook-retry-schedule 1s --webhook-timeout-seconds 1 2>"$workdir/server.log" &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; [ -n "${API_CHECK_KEEP:-}" ] || rm -rf "$workdir"' EXIT
. scripts/listening.sh
address="$(listening_address "$workdir/server.log")"
base="http://$address"

scim_post() {
  curl -sf -o /dev/null -H "Authorization: Bearer $scim" -H 'Content-Type: application/scim+json' \
    -d "$2" "$base/scim/v2/$1"
}
api() {
  local method="$1" path="$2"; shift 2
  curl -sf -o /dev/null -X "$method" -H "Authorization: Bearer $admin" \
    -H 'Content-Type: application/json' "$@" "$base/api/v1$path"
}
user='{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"%s","externalId":"%s","name":{"givenName":"%s","familyName":"Example"},"emails":[{"value":"%s","type":"work","primary":true}]}'
for name in ann bob cat; do
  scim_post Users "$(printf "$user" "$name@example.com" "ext-$name" "$name" "$name@example.com")"
done
scim_post Groups '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Editors"}'
api PUT /provisioning/role-bindings \
  -d '{"roles":["admin","editor","viewer"],"default_role":"viewer","bindings":[{"group":"Editors","role":"editor"}]}'
api POST /provisioning/sync
# A dead endpoint (nothing listens on port 9), so deliveries have attempts.
api POST /webhooks -d '{"url":"http://127.0.0.1:9/hook","description":"api-check"}'

echo "api-check: workdir $workdir"
echo "api-check: schemathesis against $base/api/v1/openapi.json"
"$venv/bin/schemathesis" --config-file scripts/api-check/schemathesis.toml run \
  "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $admin" \
  --max-examples "${API_CHECK_EXAMPLES:-40}" \
  --seed "${API_CHECK_SEED:-1}" \
  --workers 1 \
  --request-timeout 20 \
  --report junit --report-dir "target/api-check" "${API_CHECK_ARGS[@]}"

#!/usr/bin/env bash
# The console benchmark of BENCHMARKS.md: the pages an admin opens most,
# timed against a release server on a tenant of about 100,000 members (the
# audit benchmark's database, copied so it stays as it was).
#
#   scripts/bench-console.sh [DB]   # DB defaults to /tmp/audit-bench/bench.db
#                                   # (scripts/bench-audit.sh makes it)
#
# Each page is fetched 7 times over loopback with curl, signed in as an
# admin token; the median and the slowest time to the last byte are printed.
# Then a mapping change puts every user in the pending set: the script
# times the Pending page while the preview is decided in the background,
# how long deciding takes, and the pages once it is decided.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/listening.sh
source_db="${1:-/tmp/audit-bench/bench.db}"
[ -f "$source_db" ] || { echo "no $source_db: run scripts/bench-audit.sh first"; exit 1; }
cargo build --release
work="$(mktemp -d)"
trap 'kill "${server:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
cp "$source_db" "$work/bench.db"
[ -f "$source_db-wal" ] && cp "$source_db-wal" "$work/bench.db-wal"
export ROLLCALL_DB="$work/bench.db" ROLLCALL_LOG=warn
bin=./target/release/rollcall
admin="$($bin token issue --tenant bench --scope admin 2>/dev/null)"
$bin serve --listen 127.0.0.1:0 --scheduler-interval-seconds 0 2>"$work/server.log" &
server=$!
address=$(listening_address "$work/server.log")
base="http://$address"
jar="$work/cookies"
csrf="$(curl -s -c "$jar" -b "$jar" "$base/admin/sign-in" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)"
curl -s -o /dev/null -c "$jar" -b "$jar" --data-urlencode "csrf=$csrf" --data-urlencode "token=$admin" \
  --data-urlencode "next=/admin" "$base/admin/sign-in"
# Fetches a page 7 times; prints its median and slowest time in ms.
time_page() {
  local path="$1" times=()
  for _ in 1 2 3 4 5 6 7; do
    status_time="$(curl -s -o /dev/null -b "$jar" -w '%{http_code} %{time_total}' "$base$path")"
    [ "${status_time%% *}" = 200 ] || { echo "$path answered ${status_time%% *}"; exit 1; }
    times+=("${status_time#* }")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v path="$path" '{ t[NR] = $1 * 1000 } END { printf "%-56s %10.1f %10.1f\n", path, t[4], t[NR] }'
}

echo "members: $(curl -s -b "$jar" "$base/admin/members" | grep -o 'Showing 1–50 of [0-9]*' | head -1)"
printf '%-56s %10s %10s\n' page "median ms" "max ms"
for path in /admin/members "/admin/members?offset=90000" "/admin/members?search=user4242" \
    "/admin/members?status=left" "/admin/members?role=viewer&offset=50000" \
    /admin/provisioning/pending /admin/provisioning /admin/provisioning/syncs \
    /admin/provisioning/log /admin/mapping /admin/bindings; do
  time_page "$path"
done

echo
echo "after a mapping change (every user pending):"
mapping="$(curl -s -H "Authorization: Bearer $admin" "$base/api/v1/provisioning/mapping")"
changed="$(printf '%s' "$mapping" | python3 -c 'import json, sys
m = json.load(sys.stdin)
m["properties"].append({"property": "nickname", "source": "nickName", "type": "string"})
print(json.dumps(m))')"
curl -s -o /dev/null -X PUT -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  --data "$changed" "$base/api/v1/provisioning/mapping"
started="$(date +%s.%N)"
first="$(curl -s -o "$work/first.html" -b "$jar" -w '%{time_total}' "$base/admin/provisioning/pending")"
grep -q 'Deciding what the next Synchronize' "$work/first.html" || { echo "the first visit did not say it is deciding"; exit 1; }
printf '%-56s %10.1f\n' "pending, first visit (starts deciding)" "$(awk -v t="$first" 'BEGIN { print t * 1000 }')"
until curl -s -b "$jar" "$base/admin/provisioning/pending" | grep -q 'groups pending'; do sleep 0.05; done
printf '%-56s %10.1f\n' "deciding every user, in the background" "$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print (b - a) * 1000 }')"
printf '%-56s %10s %10s\n' page "median ms" "max ms"
for path in /admin/provisioning/pending "/admin/provisioning/pending?offset=50000" /admin/provisioning; do
  time_page "$path"
done

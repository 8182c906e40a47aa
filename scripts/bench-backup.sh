#!/usr/bin/env bash
# Reproduces the backup figures in BENCHMARKS.md: a release server, 100,000
# users created over SCIM Bulk, then `rollcall backup` timed while the server
# runs: idle, then under load.py's creates (8 connections).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/listening.sh
cargo build --release
dir=$(mktemp -d)
start_bench_server "$dir"
python3 - "$address" "$token" <<'PY'
import json, sys, urllib.request
address, token = sys.argv[1], sys.argv[2]
for start in range(0, 100_000, 1000):
    operations = [{"method": "POST", "path": "/Users", "bulkId": f"u{n}", "data": {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": f"user{n}@example.com", "name": {"givenName": "U", "familyName": str(n)},
        "emails": [{"value": f"user{n}@example.com", "type": "work", "primary": True}]}}
        for n in range(start, start + 1000)]
    body = json.dumps({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                       "Operations": operations}).encode()
    request = urllib.request.Request(f"http://{address}/scim/v2/Bulk", data=body, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"})
    urllib.request.urlopen(request).read()
PY
echo "database: $(du -b "$ROLLCALL_DB" | cut -f1) bytes (WAL $(du -b "$ROLLCALL_DB-wal" 2>/dev/null | cut -f1 || echo 0))"
/usr/bin/time -f "idle backup: %e s, peak RSS %M KiB" ./target/release/rollcall backup --to "$dir/idle.db"
python3 ../shared/load/load.py --base-url "http://$address/scim/v2" --token "$token" \
  --users 20000 --phases create --concurrency 8 --out "$dir/load.json" > "$dir/load.log" 2>&1 &
load=$!
sleep 3
/usr/bin/time -f "backup under 8-client creates: %e s, peak RSS %M KiB" \
  ./target/release/rollcall backup --to "$dir/loaded.db"
kill "$load" 2>/dev/null; wait "$load" 2>/dev/null || true
kill "$server"; wait "$server" || true
rm -rf "$dir"

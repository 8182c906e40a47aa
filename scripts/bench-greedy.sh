#!/usr/bin/env bash
# Reproduces the "2,000 concurrent list requests" figures in BENCHMARKS.md:
# a release server with 10,000 users, 2,000 connections (wrk) asking for
# pages of SCIM list that no index answers (heavy reads), and the server's
# threads and resident memory before, at their peak during, and 5 s after
# every connection closed. Needs wrk. Output: the figures on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
. scripts/listening.sh
cargo build --release
ulimit -n 8192
dir=$(mktemp -d)
start_bench_server "$dir"
python3 - "$address" "$token" <<'PY'
import http.client, json, sys, threading
address, token = sys.argv[1], sys.argv[2]
def create(start):
    connection = http.client.HTTPConnection(address)
    for n in range(start, 10_000, 8):
        body = json.dumps({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                           "userName": f"user{n:05}@example.com",
                           "emails": [{"value": f"user{n:05}@example.com", "type": "work"}]})
        connection.request("POST", "/scim/v2/Users", body, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 201, response.status
threads = [threading.Thread(target=create, args=(start,)) for start in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
PY
sample() { awk '/^Threads:/ {t=$2} /^VmRSS:/ {r=$2} END {printf "%d %.1f\n", t, r/1024}' "/proc/$server/status"; }
read -r threads rss <<<"$(sample)"
echo "before: $threads threads, $rss MiB RSS (10,000 users)"
peak_threads=0; peak_rss=0
(while kill -0 "$server" 2>/dev/null; do sample; sleep 0.2; done) >> "$dir/samples" &
sampler=$!
# Two bursts: the second shows whether memory kept after the first is
# reused or grows again.
for burst in 1 2; do
  : > "$dir/samples"
  wrk -t 2 -c 2000 -d 20s --timeout 60s -H "Authorization: Bearer $token" \
    "http://$address/scim/v2/Users?filter=userName%20co%20%22user0%22&count=100" | tee "$dir/wrk.txt"
  sleep 5
  read -r peak_threads peak_rss <<<"$(sort -k1,1n "$dir/samples" | tail -1 | awk '{print $1}') $(sort -k2,2n "$dir/samples" | tail -1 | awk '{print $2}')"
  read -r threads rss <<<"$(sample)"
  echo "burst $burst: peak $peak_threads threads, $peak_rss MiB RSS; 5 s after every connection closed: $threads threads, $rss MiB RSS"
done
kill "$sampler" 2>/dev/null || true
health=$(curl -s -o /dev/null -w '%{http_code} in %{time_total}s' "http://$address/healthz")
echo "healthz after: $health"
kill "$server"; wait "$server" || true
rm -rf "$dir"

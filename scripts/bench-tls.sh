#!/usr/bin/env bash
# Reproduces the HTTPS figures in BENCHMARKS.md: the same SCIM load
# (../shared/load/load.py with wrk: creates, lookups, PATCHes at 10,000
# users) against a fresh release server over plain HTTP and over HTTPS
# (serve --tls-cert/--tls-key, an ECDSA P-256 leaf from a CA made here),
# and the cost of a full TLS handshake (new connection per request).
# Needs wrk and openssl. Results: target/bench-tls-{http,https}.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
. scripts/listening.sh
cargo build --release
certs=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench CA" -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$certs/key.pem" -out "$certs/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$certs/ext"
openssl x509 -req -in "$certs/leaf.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
  -CAcreateserial -days 2 -extfile "$certs/ext" -out "$certs/leaf.pem" 2>/dev/null
cat "$certs/leaf.pem" "$certs/ca.pem" > "$certs/chain.pem"
# Python's ssl (the load generator's creates) trusts the bench CA.
export SSL_CERT_FILE="$certs/ca.pem"
for scheme in http https; do
  dir=$(mktemp -d)
  tls=()
  [ "$scheme" = https ] && tls=(--tls-cert "$certs/chain.pem" --tls-key "$certs/key.pem")
  start_bench_server "$dir" "${tls[@]}"
  python3 ../shared/load/load.py --base-url "$scheme://$address/scim/v2" --token "$token" \
    --server-pid "$server" --users 2000 --population 10000 --engine wrk --wrk-threads 1 \
    --out "target/bench-tls-$scheme.json"
  # A new connection (and, over TLS, a full handshake) per request.
  start=$(date +%s.%N)
  for _ in $(seq 1 500); do
    curl -s -o /dev/null --cacert "$certs/ca.pem" "$scheme://$address/livez"
  done
  end=$(date +%s.%N)
  echo "$scheme: 500 requests on new connections (curl) in $(echo "$end - $start" | bc) s"
  kill "$server"; wait "$server" || true
  rm -rf "$dir"
done
rm -rf "$certs"

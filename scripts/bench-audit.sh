#!/usr/bin/env bash
# The audit benchmark of BENCHMARKS.md: two simulated years of one tenant
# (100,000 users, about 1.08 million events) pushed over SCIM Bulk, then
# joiners-leavers for two quarters, as-of at two instants, verify of the
# whole chain and a rebuild of every projection, each timed.
#
#   scripts/bench-audit.sh [DIR]    # DIR defaults to /tmp/audit-bench
#
# An existing bench.db in DIR is measured again without being refilled.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example audit_bench
exec target/release/examples/audit_bench "${1:-/tmp/audit-bench}"

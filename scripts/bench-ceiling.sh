#!/usr/bin/env bash
# Reproduces the "ceiling" figures in BENCHMARKS.md: wrk with the load
# generator's script against a canned-body axum server (examples/ceiling.rs)
# and against rollcall with durability off and full, each phase at c8.
# Usage: scripts/bench-ceiling.sh [--users N] [--seconds S]. Needs wrk.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk"; exit 1; }
cargo build --release --bin rollcall --example ceiling
python3 scripts/bench_ceiling.py "$@"

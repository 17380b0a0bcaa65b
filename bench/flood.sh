#!/usr/bin/env bash
# The flood figures of BENCHMARKS.md ("Under attack"): an honest client sending every 20 ms,
# its ACK round-trip times (p50, p99, max) and a fresh connection's time to its first ACK, with
# 0, 20 and 200 flooding connections that never read (each reconnecting as soon as it is
# dropped), 10 s each, against the release server on loopback. About 40 s.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p heartbeat-net --test e2e --locked -- \
    --ignored --exact hostile::flood_rtt_figures --nocapture 2>&1 |
    grep -E '^flooders=|^test result'

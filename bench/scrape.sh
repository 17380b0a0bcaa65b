#!/usr/bin/env bash
# A Prometheus scrape of 10,000 live clients, end to end: a release heartbeat-server with
# --metrics-addr, heartbeat-load holding 10,000 v1 clients at 1 s, and /metrics (then
# /clients) fetched once a second during the measured window. The same load runs once without
# scraping first, so the acks' round trip (heartbeat-load's report) shows what the scrapes cost
# the monitor's loop. 127.0.0.1 only.
#
#   bench/scrape.sh                 # WINDOW=30 by default
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${WINDOW:-30}
BIN=target/release
cargo build --release -p heartbeat-net --bins >&2
OUT=$(mktemp -d)
# One file per client in the server (and one in the generator, which raises its own).
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PID=
trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$OUT"; true' EXIT

# run LABEL SCRAPE: one load run; with SCRAPE=1, GET /metrics and /clients every second of the
# window, their times and sizes in $OUT/LABEL.scrapes.
run() {
    local label=$1 scrape=$2 port mport
    port=$(free_port)
    mport=$(free_port)
    RUST_LOG=warn "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$port" \
        --metrics-addr "127.0.0.1:$mport" >/dev/null 2>&1 &
    PID=$!
    sleep 1
    "$BIN/heartbeat-load" -H 127.0.0.1 -p "$port" --json --watch-pid "$PID" --clients 10000 \
        --interval 1000 --ramp 5 --duration "$WINDOW" >"$OUT/$label.json" &
    local load=$!
    if [ "$scrape" = 1 ]; then
        sleep 8 # the ramp, and every client's first heartbeats
        for _ in $(seq $((WINDOW - 4))); do
            for path in metrics clients; do
                curl -s -o /dev/null -w "$path %{http_code} %{time_total} %{size_download}\n" \
                    "http://127.0.0.1:$mport/$path" >>"$OUT/$label.scrapes"
            done
            sleep 1
        done
    fi
    wait "$load"
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
}

run quiet 0
run scraped 1

echo "# bench/scrape.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for label in quiet scraped; do
    python3 - "$OUT/$label.json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rtt = r["rtt_us"] or {}
cpu = r["watched"][0]["cpu_us_per_heartbeat"] if r["watched"] else None
print(f"{sys.argv[2]}: {r['connected']} clients, sent {r['sent']}, acks {r['acks']}, skipped {r['skipped']}, "
      f"ack rtt p50 {rtt.get('p50')} us p99 {rtt.get('p99')} us p99.9 {rtt.get('p999')} us max {rtt.get('max')} us, "
      f"server cpu {cpu} us/heartbeat")
PY
done
python3 - "$OUT/scraped.scrapes" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
for path in ("metrics", "clients"):
    mine = [r for r in rows if r[0] == path]
    times = sorted(float(r[2]) * 1000 for r in mine)
    bad = sum(1 for r in mine if r[1] != "200")
    print(f"{path}: {len(mine)} requests, {bad} not 200, {mine[-1][3]} bytes, "
          f"time p50 {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms")
PY

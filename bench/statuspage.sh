#!/usr/bin/env bash
# The status page at 10,000 clients, end to end: a release heartbeat-server holding 10,000 v1
# clients at 1 s (heartbeat-load) plus 500 expected clients never seen (--expect), so the first
# page is all problems. Run once without --metrics-addr (no page, no history) and once with it,
# /status.json fetched every second (the first page, then page 100, which is all up clients),
# / once, and, when chromium is installed, the page loaded in headless chromium once the
# measured window is over (so its start-up does not weigh on the acks): the wall time of
# `chromium --dump-dom` with its script's first poll, start-up included. The server's peak
# RSS of the two runs gives what the history (and the metrics thread) adds. 127.0.0.1 only.
#
#   bench/statuspage.sh                 # WINDOW=30 by default
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${WINDOW:-30}
BIN=${CARGO_TARGET_DIR:-target}/release
cargo build --release -p heartbeat-net --bins >&2
OUT=$(mktemp -d)
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for i in $(seq 0 499); do echo "ghost-$i"; done >"$OUT/expect.txt"

PID=
trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$OUT"; true' EXIT

# run LABEL PAGE: one load run; with PAGE=1, the page's requests, times and sizes in
# $OUT/LABEL.requests.
run() {
    local label=$1 page=$2 port mport
    port=$(free_port)
    mport=$(free_port)
    local metrics=()
    [ "$page" = 1 ] && metrics=(--metrics-addr "127.0.0.1:$mport")
    RUST_LOG=warn "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$port" --expect "$OUT/expect.txt" \
        --expect-grace 2s "${metrics[@]}" >/dev/null 2>&1 &
    PID=$!
    sleep 1
    "$BIN/heartbeat-load" -H 127.0.0.1 -p "$port" --json --watch-pid "$PID" --clients 10000 \
        --interval 1000 --ramp 5 --duration "$WINDOW" >"$OUT/$label.json" &
    local load=$!
    if [ "$page" = 1 ]; then
        sleep 8 # the ramp, and every client's first heartbeats
        curl -s -o /dev/null -w "html %{http_code} %{time_total} %{size_download}\n" \
            "http://127.0.0.1:$mport/" >>"$OUT/$label.requests"
        for _ in $(seq $((WINDOW - 8))); do
            for q in "page=0" "page=100"; do
                curl -s -o /dev/null -w "$q %{http_code} %{time_total} %{size_download}\n" \
                    "http://127.0.0.1:$mport/status.json?$q" >>"$OUT/$label.requests"
            done
            sleep 1
        done
    fi
    wait "$load"
    if [ "$page" = 1 ]; then
        if command -v chromium >/dev/null; then
            local t0 t1
            t0=$(date +%s.%N)
            chromium --headless --no-sandbox --disable-gpu --no-first-run \
                --user-data-dir="$OUT/profile" --virtual-time-budget=1000 --dump-dom \
                "http://127.0.0.1:$mport/" >"$OUT/dom.html" 2>/dev/null || true
            t1=$(date +%s.%N)
            echo "chromium 200 $(echo "$t1 - $t0" | bc) $(wc -c <"$OUT/dom.html")" \
                >>"$OUT/$label.requests"
            echo "rows $(grep -o 'class="st-row ' "$OUT/dom.html" | wc -l)," \
                "lanes $(grep -o 'class="lane"' "$OUT/dom.html" | wc -l)" >"$OUT/dom.count"
        fi
    fi
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
}

run off 0
run page 1

echo "# bench/statuspage.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for label in off page; do
    python3 - "$OUT/$label.json" "$label" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rtt = r["rtt_us"] or {}
w = r["watched"][0] if r["watched"] else {}
print(f"{sys.argv[2]}: {r['connected']} clients, sent {r['sent']}, acks {r['acks']}, skipped {r['skipped']}, "
      f"ack rtt p50 {rtt.get('p50')} us p99 {rtt.get('p99')} us, "
      f"server cpu {w.get('cpu_us_per_heartbeat')} us/heartbeat, peak rss {w.get('peak_rss_kib')} KiB")
PY
done
python3 - "$OUT/page.requests" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
for what in ("html", "page=0", "page=100", "chromium"):
    mine = [r for r in rows if r[0] == what]
    if not mine:
        continue
    times = sorted(float(r[2]) * 1000 for r in mine)
    bad = sum(1 for r in mine if r[1] != "200")
    print(f"{what}: {len(mine)} requests, {bad} not 200, {mine[-1][3]} bytes, "
          f"time p50 {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms")
PY
[ -f "$OUT/dom.count" ] && echo "chromium's DOM: $(cat "$OUT/dom.count")"
true

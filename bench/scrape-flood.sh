#!/usr/bin/env bash
# A scrape flood: 20 `curl` loops fetching /metrics as fast as they can beside 2,000 v1 clients
# at 100 ms (heartbeat-load), for a bounded window, against two heartbeat-server builds side
# by side (BEFORE and AFTER, alternating, RUNS rounds), each once quiet (no scrapes) and once
# flooded. What it shows: the acks' round trip (heartbeat-load's report), i.e. what the
# scrapes cost the monitor's loop, and how many scrapes were served. 127.0.0.1 only.
#
#   BEFORE=/path/to/main/release AFTER=target/release bench/scrape-flood.sh
#   (each a directory with heartbeat-server; heartbeat-load is taken from AFTER)
#   RUNS=3 WINDOW=20 SCRAPERS=20 CLIENTS=2000 INTERVAL=100 NICE=0 by default
#   NICE=19 runs the scrapers at the lowest priority: they then take only CPU that the server
#   and the load generator leave, as a Prometheus on another machine would.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
WINDOW=${WINDOW:-20}
SCRAPERS=${SCRAPERS:-20}
CLIENTS=${CLIENTS:-2000}
INTERVAL=${INTERVAL:-100}
NICE=${NICE:-0}
BEFORE=${BEFORE:?a directory with the heartbeat-server to compare with}
AFTER=${AFTER:-target/release}
LOAD=${LOAD:-$AFTER/heartbeat-load}
OUT=$(mktemp -d)
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$OUT"
}
trap cleanup EXIT

# run LABEL BIN FLOOD: one load run against BIN/heartbeat-server; with FLOOD=1, SCRAPERS curl
# loops on /metrics for the measured window (status and time of each in $OUT/LABEL.scrapes).
run() {
    local label=$1 bin=$2 flood=$3 port mport server load scrapers=()
    port=$(free_port)
    mport=$(free_port)
    RUST_LOG=warn "$bin/heartbeat-server" --bind 127.0.0.1 -p "$port" \
        --metrics-addr "127.0.0.1:$mport" >/dev/null 2>&1 &
    server=$!
    PIDS=("$server")
    sleep 1
    cut -d' ' -f1-3 /proc/loadavg >"$OUT/$label.load"
    "$LOAD" -H 127.0.0.1 -p "$port" --json --watch-pid "$server" --clients "$CLIENTS" \
        --interval "$INTERVAL" --ramp 2 --duration "$WINDOW" >"$OUT/$label.json" &
    load=$!
    PIDS+=("$load")
    if [ "$flood" = 1 ]; then
        sleep 3 # the ramp, and the window opening
        local end=$((SECONDS + WINDOW))
        for i in $(seq "$SCRAPERS"); do
            (
                while [ "$SECONDS" -lt "$end" ]; do
                    nice -n "$NICE" curl -s -o /dev/null -m 10 -w "%{http_code} %{time_total}\n" \
                        "http://127.0.0.1:$mport/metrics" || true
                done
            ) >"$OUT/$label.scrapes.$i" &
            scrapers+=("$!")
            PIDS+=("$!")
        done
    fi
    wait "$load"
    for p in "${scrapers[@]}"; do wait "$p"; done # they end with the window
    cat "$OUT/$label".scrapes.* >"$OUT/$label.scrapes" 2>/dev/null || : >"$OUT/$label.scrapes"
    kill -TERM "$server"
    wait "$server" 2>/dev/null || true
    PIDS=()
}

for r in $(seq "$RUNS"); do
    for side in before after; do
        bin=$BEFORE
        [ "$side" = after ] && bin=$AFTER
        run "$side.quiet.$r" "$bin" 0
        run "$side.flood.$r" "$bin" 1
    done
done

echo "# bench/scrape-flood.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores: $CLIENTS clients at ${INTERVAL} ms, $SCRAPERS scrapers (nice $NICE), ${WINDOW} s window, $RUNS rounds"
python3 - "$OUT" "$RUNS" <<'PY'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def row(label):
    r = json.load(open(os.path.join(out, label + ".json")))
    rtt = r["rtt_us"] or {}
    cpu = r["watched"][0]["cpu_us_per_heartbeat"] if r["watched"] else None
    lines = [l.split() for l in open(os.path.join(out, label + ".scrapes"))]
    ok = sum(1 for l in lines if l[0] == "200")
    times = sorted(float(l[1]) * 1000 for l in lines if l[0] == "200")
    load = open(os.path.join(out, label + ".load")).read().strip()
    return dict(sent=r["sent"], acks=r["acks"], skipped=r["skipped"],
                p50=rtt.get("p50"), p99=rtt.get("p99"), cpu=cpu, scrapes=len(lines), ok=ok,
                scrape_p50=times[len(times) // 2] if times else None, load=load)
for side in ("before", "after"):
    for mode in ("quiet", "flood"):
        rows = [row(f"{side}.{mode}.{i}") for i in range(1, runs + 1)]
        for i, x in enumerate(rows, 1):
            print(f"{side} {mode} {i}: sent {x['sent']} acks {x['acks']} skipped {x['skipped']}, "
                  f"ack rtt p50 {x['p50']} us p99 {x['p99']} us, server cpu {x['cpu']} us/heartbeat, "
                  f"scrapes {x['scrapes']} ({x['ok']} x 200, p50 {x['scrape_p50']} ms), load {x['load']}")
        med = lambda k: statistics.median(x[k] for x in rows if x[k] is not None) if any(x[k] is not None for x in rows) else None
        print(f"{side} {mode} MEDIAN: ack rtt p50 {med('p50')} us, p99 {med('p99')} us, "
              f"cpu {med('cpu')} us/heartbeat, scrapes {med('scrapes')}, 200s {med('ok')}, scrape p50 {med('scrape_p50')} ms")
PY

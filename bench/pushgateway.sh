#!/usr/bin/env bash
# heartbeat-server against Prometheus Pushgateway, the dead man's switch a Prometheus user would
# set up instead: the same clients at the same rate, side by side in one invocation, loopback
# only, bounded in time.
#
# Each of CLIENTS clients reports once per INTERVAL_MS for DURATION s:
#  - to heartbeat-server: heartbeat-load's v1 clients (a heartbeat, its ack);
#  - to Pushgateway: a PUT of the client's group (/metrics/job/heartbeat/instance/load-I) with
#    its sequence number and timestamp, as a cron job or a sidecar would push them; the pushers
#    are Python threads on kept-alive connections (bench/pushgateway-load.py), each client on its
#    own drift-free grid, a push skipped (counted) when the previous one has not been answered.
# For each target: its CPU time (user + system, /proc) per report offered and per report
# answered, its peak resident memory, and the reports answered. RUNS runs, the targets taking
# turns within each run; medians.
#
# Needs: Debian's `prometheus-pushgateway` (apt-get install prometheus-pushgateway), python3, ss.
# Environment: RUNS (3), CLIENTS (1000), INTERVAL_MS (1000), DURATION (20), OUT (raw results;
# a new temporary directory by default).
# Usage: bench/pushgateway.sh        (about RUNS x 2 x (DURATION + 5) s after the release build)
set -euo pipefail

cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-1000}
INTERVAL_MS=${INTERVAL_MS:-1000}
DURATION=${DURATION:-20}
OUT=${OUT:-$(mktemp -d -t heartbeat-pushgateway.XXXXXX)}
mkdir -p "$OUT"

command -v prometheus-pushgateway >/dev/null || {
    echo "needs prometheus-pushgateway: apt-get install prometheus-pushgateway" >&2
    exit 2
}
cargo build --release --locked -p heartbeat-net --bins >&2
BIN=target/release
ulimit -n "$(ulimit -Hn)"

PID=""
PORT=""
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_listening() {
    local i
    for i in $(seq 200); do
        ss -Hltn "sport = :$PORT" | grep -q . && return 0
        sleep 0.05
    done
    echo "nothing listens on port $PORT" >&2
    exit 1
}
stop() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
}
trap stop EXIT

for run in $(seq "$RUNS"); do
    # heartbeat-server, measured by heartbeat-load (--watch-pid).
    PORT=$(free_port)
    RUST_LOG=warn "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
    PID=$!
    wait_listening
    "$BIN/heartbeat-load" -H 127.0.0.1 -p "$PORT" -c "$CLIENTS" -i "$INTERVAL_MS" \
        --duration "$DURATION" --ramp 2 --json --watch-pid "$PID" >"$OUT/server-$run.json"
    stop

    # Pushgateway, in memory (no persistence file), measured the same way from /proc.
    PORT=$(free_port)
    prometheus-pushgateway --web.listen-address="127.0.0.1:$PORT" --log.level=warn \
        >/dev/null 2>&1 &
    PID=$!
    wait_listening
    python3 bench/pushgateway-load.py --port "$PORT" --pid "$PID" --clients "$CLIENTS" \
        --interval-ms "$INTERVAL_MS" --duration "$DURATION" --ramp 2 >"$OUT/pushgateway-$run.json"
    stop
    echo "run $run of $RUNS done" >&2
done

python3 - "$OUT" "$RUNS" "$CLIENTS" "$INTERVAL_MS" "$DURATION" <<'EOF'
import json, statistics, sys
out, runs, clients, interval, duration = sys.argv[1:]
runs = int(runs)
def load(name):
    return [json.load(open(f"{out}/{name}-{i}.json")) for i in range(1, runs + 1)]
server = load("server")
push = load("pushgateway")
med = statistics.median
srv_cpu = med(r["watched"][0]["cpu_us_per_heartbeat"] for r in server)
srv_rss = med(r["watched"][0]["peak_rss_kib"] for r in server) / 1024
srv_sent = med(r["sent"] for r in server)
srv_acked = med(r["acks"] for r in server)
pg_cpu_offered = med(r["cpu_us_per_offered"] for r in push)
pg_cpu_answered = med(r["cpu_us_per_answered"] for r in push)
pg_rss = med(r["peak_rss_kib"] for r in push) / 1024
pg_offered = med(r["offered"] for r in push)
pg_answered = med(r["answered"] for r in push)
print(f"\n{clients} clients x {interval} ms, {duration} s windows, medians of {runs} runs (raw: {out})")
print(f"{'target':<22} {'CPU us/report':>14} {'peak RSS MiB':>13} {'offered':>9} {'answered':>9}")
print(f"{'heartbeat-server':<22} {srv_cpu:>14.1f} {srv_rss:>13.1f} {srv_sent:>9.0f} {srv_acked:>9.0f}")
print(f"{'prometheus-pushgateway':<22} {pg_cpu_answered:>14.1f} {pg_rss:>13.1f} {pg_offered:>9.0f} {pg_answered:>9.0f}")
gen = med(r["generator"]["cpu_s"] for r in server)
pushers = med(r["pushers_cpu_s"] for r in push)
pg_cpu = med(r["cpu_s"] for r in push)
print(f"pushgateway per report offered: {pg_cpu_offered:.1f} us ({pg_cpu:.1f} s of CPU in the "
      f"{duration} s window); per answered report {pg_cpu_answered / srv_cpu:.0f}x the server's")
print(f"load generators' own CPU over the window: heartbeat-load {gen:.2f} s, pushers {pushers:.2f} s")
EOF

#!/usr/bin/env bash
# heartbeat-server against the sink (`heartbeat-load sink`, a read-and-discard floor), side by
# side in one invocation, measured by heartbeat-load (release build, 127.0.0.1 only):
#
#  (a) CPU per heartbeat: 1,000 clients x 10 ms (100,000 heartbeats/s offered), v1 and legacy,
#      RUNS runs of CPU_DURATION s each; the targets take turns within each run so that a
#      change in background load hits them alike. Medians, and each target's ratio to the sink.
#      The server runs twice: at its default log level (info: one line per heartbeat, stderr
#      to /dev/null) and with RUST_LOG=warn.
#  (b) Memory at scale: 10,000 v1 clients x 1 s for SCALE_DURATION s: peak and current RSS of
#      the server and of the sink, and whether everything sent was counted (the server's
#      summary: received == sent, nothing missed; the sink's count == sent).
#
# Environment: RUNS (3), CPU_DURATION (10), SCALE_DURATION (60), OUT (raw JSON; a new temporary
# directory by default). Needs python3 (medians, JSON) and ss (waiting for a port).
# Usage: bench/scale.sh            (from anywhere; about 4 + 2 minutes with the defaults)
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
CPU_DURATION=${CPU_DURATION:-10}
SCALE_DURATION=${SCALE_DURATION:-60}
OUT=${OUT:-$(mktemp -d -t heartbeat-scale.XXXXXX)}
mkdir -p "$OUT"

cargo build --release --locked -p heartbeat-net --bins >&2
BIN=target/release
# The server and the sink hold one file per connection; heartbeat-load raises its own limit.
ulimit -n "$(ulimit -Hn)"

PID=""
PORT=""

# start TARGET [JSON-FILE]: TARGET is server, server-warn or sink; sets PID and PORT.
start() {
    PORT=$(free_port)
    local json=${2:-/dev/null}
    case $1 in
        server) RUST_LOG=info "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$PORT" \
            >/dev/null 2>/dev/null &
            PID=$! ;;
        server-warn) RUST_LOG=warn "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$PORT" \
            >/dev/null 2>/dev/null &
            PID=$! ;;
        server-json) RUST_LOG=warn "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$PORT" --json \
            > >(grep --line-buffered '"event":"summary"' >"$json") 2>/dev/null &
            PID=$! ;;
        sink) "$BIN/heartbeat-load" sink --bind 127.0.0.1 -p "$PORT" --json >"$json" 2>/dev/null &
            PID=$! ;;
    esac
    wait_listening
}

stop() {
    kill -TERM "$PID"
    wait "$PID" || true
}

trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; true' EXIT

# load LABEL ARGS...: one heartbeat-load run against $PORT watching $PID; appends its JSON
# report, labelled, to $OUT/LABEL.jsonl.
load() {
    local label=$1
    shift
    "$BIN/heartbeat-load" -H 127.0.0.1 -p "$PORT" --json --watch-pid "$PID" "$@" \
        >"$OUT/last.json"
    cat "$OUT/last.json" >>"$OUT/$label.jsonl"
}

echo "# bench/scale.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw reports: $OUT" >&2

# (a) CPU per heartbeat.
for proto in v1 legacy; do
    flag=()
    [ "$proto" = legacy ] && flag=(--legacy)
    for run in $(seq "$RUNS"); do
        for target in server server-warn sink; do
            echo "(a) $proto run $run/$RUNS: $target" >&2
            start "$target"
            load "a-$proto-$target" --clients 1000 --interval 10 --ramp 1 \
                --duration "$CPU_DURATION" "${flag[@]}"
            stop
        done
    done
done

# (b) Memory at scale, and everything counted.
echo "(b) 10,000 clients: server" >&2
start server-json "$OUT/b-server-summary.jsonl"
load b-server --clients 10000 --interval 1000 --ramp 5 --duration "$SCALE_DURATION"
stop
# The summary is one long line through grep; let it land.
for _ in $(seq 100); do
    [ -s "$OUT/b-server-summary.jsonl" ] && break
    sleep 0.1
done
echo "(b) 10,000 clients: sink" >&2
start sink "$OUT/b-sink-counts.jsonl"
load b-sink --clients 10000 --interval 1000 --ramp 5 --duration "$SCALE_DURATION"
sent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$OUT/last.json")
# Every connection is closed when heartbeat-load exits; the sink reports "idle" once it has
# read them all to the end.
for _ in $(seq 200); do
    grep -q "\"event\":\"idle\".*\"heartbeats\":$sent\b" "$OUT/b-sink-counts.jsonl" && break
    sleep 0.1
done
stop
PID=""

python3 - "$OUT" "$RUNS" "$CPU_DURATION" "$SCALE_DURATION" <<'EOF'
import json, statistics, sys
out, runs, cpu_duration, scale_duration = sys.argv[1:]

def reports(label):
    with open(f"{out}/{label}.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")

print(f"\n## (a) CPU per heartbeat: 1,000 clients x 10 ms, {cpu_duration} s windows, "
      f"median of {runs} runs\n")
print("| protocol | target | server-side CPU per heartbeat | x sink | each run (us) "
      "| achieved / offered per s | ack RTT p99 | generator CPU per heartbeat |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for proto in ["v1", "legacy"]:
    rows = {t: reports(f"a-{proto}-{t}") for t in ["server", "server-warn", "sink"]}
    sink = median(r["watched"][0]["cpu_us_per_heartbeat"] for r in rows["sink"])
    names = {"server": "heartbeat-server (log info)",
             "server-warn": "heartbeat-server (RUST_LOG=warn)", "sink": "sink"}
    for target, rs in rows.items():
        cpu = [r["watched"][0]["cpu_us_per_heartbeat"] for r in rs]
        med = median(cpu)
        achieved = median(r["achieved_per_s"] for r in rs)
        offered = median(r["offered_per_s"] for r in rs)
        p99 = median((r["rtt_us"] or {}).get("p99") for r in rs)
        p99 = "-" if p99 != p99 else f"{p99 / 1000:.2f} ms"
        gen = median(r["generator"]["cpu_us_per_heartbeat"] for r in rs)
        each = ", ".join(f"{c:.2f}" for c in cpu)
        print(f"| {proto} | {names[target]} | **{med:.2f} us** | {med / sink:.2f} | {each} "
              f"| {achieved:,.0f} / {offered:,.0f} | {p99} | {gen:.2f} us |")
        for r in rs:
            trouble = {k: r[k] for k in ["connect_failures", "disconnects", "errors"] if r[k]}
            if trouble or (proto == "v1" and target != "sink" and r["acks"] != r["sent"]):
                print(f"|  | (a run of {target}: {trouble}, acks {r['acks']} of {r['sent']}) "
                      "| | | | | | |")

print(f"\n## (b) 10,000 v1 clients x 1 s, {scale_duration} s window\n")
print("| target | sent | counted | missed | peak RSS | RSS at window end | CPU per heartbeat |")
print("| --- | --- | --- | --- | --- | --- | --- |")
server = reports("b-server")[0]
summary = reports("b-server-summary")
if summary:
    clients = summary[0]["clients"]
    counted = sum(c["received"] for c in clients)
    missed = sum(c["missed"] for c in clients)
    counted = f"{counted:,} ({len(clients):,} clients)"
else:
    counted, missed = "no summary", "?"
sink = reports("b-sink")[0]
counts = [c for c in reports("b-sink-counts") if c["event"] in ("idle", "summary")]
sink_counted = f"{counts[-1]['heartbeats']:,}" if counts else "no count"
for name, r, c, m in [("heartbeat-server (RUST_LOG=warn)", server, counted, missed),
                      ("sink", sink, sink_counted, "-")]:
    w = r["watched"][0]
    print(f"| {name} | {r['sent']:,} | {c} | {m} | {w['peak_rss_kib'] / 1024:.1f} MiB "
          f"| {w['rss_kib'] / 1024:.1f} MiB | {w['cpu_us_per_heartbeat']:.2f} us |")
ratio = server["watched"][0]["peak_rss_kib"] / sink["watched"][0]["peak_rss_kib"]
extra = server["watched"][0]["peak_rss_kib"] - sink["watched"][0]["peak_rss_kib"]
print(f"\nServer peak RSS = {ratio:.1f} x the sink's, {extra * 1024 / 10000:,.0f} bytes per "
      "client more.")
for name, r in [("server", server), ("sink", sink)]:
    trouble = {k: r[k] for k in ["connect_failures", "disconnects", "errors", "skipped"] if r[k]}
    if trouble:
        print(f"(b) {name} run: {trouble}; first error: {r['first_error'] or r['first_connect_error']}")
EOF

#!/usr/bin/env bash
# A baseline heartbeat-server binary against this tree's and two floors, side by side in one
# invocation (issue 21, point 1): the sink (`heartbeat-load sink`, read and discard) and the
# acking sink (`heartbeat-load sink --ack`: WELCOME and one ACK per heartbeat, nothing else, the
# floor of any server that speaks the protocol; on loopback each ack's receive is charged to
# its sender). CPU per
# heartbeat at 1,000 clients x 10 ms (100,000 heartbeats/s offered) and 1,000 clients x 1 s
# (every heartbeat a wake-up), the servers at the default log level (RUST_LOG=info, stderr to
# /dev/null). The four take turns within each run, so a change in background load hits them
# alike; medians of RUNS runs, and each one's ratio to the sink. 127.0.0.1 only.
#
# Environment: BASE (the baseline server binary; required, e.g. a release build of an older
# commit), RUNS (3), DURATION (10 s), INTERVALS (the rates, in ms: "10 1000"), OUT (raw JSON; a new temporary directory by default).
# Usage: BASE=/tmp/heartbeat-server-main bench/floor.sh       (about 2 x RUNS minutes)
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
: "${BASE:?set BASE to the baseline heartbeat-server binary}"
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
INTERVALS=${INTERVALS:-10 1000}
OUT=${OUT:-$(mktemp -d -t heartbeat-floor.XXXXXX)}
mkdir -p "$OUT"

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --locked -p heartbeat-net --bins >&2
fi
ulimit -n "$(ulimit -Hn)"
PID=""
PORT=""
trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; true' EXIT

# start TARGET: base, this, ack or sink; sets PID and PORT.
start() {
    PORT=$(free_port)
    case $1 in
        base) RUST_LOG=info "$BASE" --bind 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & ;;
        this) RUST_LOG=info "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & ;;
        ack) "$BIN/heartbeat-load" sink --ack --bind 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & ;;
        sink) "$BIN/heartbeat-load" sink --bind 127.0.0.1 -p "$PORT" >/dev/null 2>&1 & ;;
    esac
    PID=$!
    wait_listening
}

echo "# bench/floor.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw reports: $OUT" >&2
for interval in $INTERVALS; do
    for run in $(seq "$RUNS"); do
        for target in base this ack sink; do
            echo "1,000 x $interval ms, run $run/$RUNS: $target" >&2
            start "$target"
            "$BIN/heartbeat-load" -H 127.0.0.1 -p "$PORT" --json --watch-pid "$PID" \
                --clients 1000 --interval "$interval" --ramp 1 --duration "$DURATION" \
                >>"$OUT/$interval-$target.jsonl"
            kill -TERM "$PID"
            wait "$PID" || true
            PID=""
        done
    done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" $INTERVALS <<'PY'
import json, statistics, sys
out = sys.argv[1]
print("| rate | target | CPU per heartbeat (median) | each run | x sink | x ack | acks / sent |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for interval in sys.argv[2:]:
    rows = {}
    for t in ["base", "this", "ack", "sink"]:
        with open(f"{out}/{interval}-{t}.jsonl") as f:
            rows[t] = [json.loads(l) for l in f if l.strip()]
    cpu = {t: [r["watched"][0]["cpu_us_per_heartbeat"] for r in rs] for t, rs in rows.items()}
    sink = statistics.median(cpu["sink"])
    ack = statistics.median(cpu["ack"])
    for t, rs in rows.items():
        med = statistics.median(cpu[t])
        acks = "-" if t == "sink" else ", ".join(f"{r['acks']}/{r['sent']}" for r in rs)
        print(f"| 1,000 x {interval} ms | {t} | **{med:.2f} us** | "
              f"{', '.join(f'{c:.2f}' for c in cpu[t])} | {med / sink:.2f} | {med / ack:.2f} | {acks} |")
PY

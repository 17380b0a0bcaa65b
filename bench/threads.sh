#!/usr/bin/env bash
# heartbeat-server --threads 1 against --threads 2 (issue 21, point 2), side by side in one
# invocation, measured by heartbeat-load (release build, 127.0.0.1 only):
#
#  (a) 1,000 clients x 10 ms (100,000 heartbeats/s offered), RUNS runs of CPU_DURATION s; the
#      targets take turns within each run. The generator is pinned to CPU 1 (`taskset -c 1`);
#      the server to CPU 0 with one thread (t1-pinned), and to CPUs 0-1 with one thread (t1)
#      and with two (t2): on two cores, a second server thread can only share the generator's.
#  (b) The lock: one more run of t1 and t2 each with --measure-lock (time under the core's
#      lock over the run, logged at exit).
#  (c) 10,000 clients x 1 s for SCALE_DURATION s, t1 and t2 once each: memory, everything
#      acknowledged.
#
# Environment: RUNS (3), CPU_DURATION (10), SCALE_DURATION (20), OUT (raw JSON; a new temporary
# directory by default). Needs python3, ss and taskset.
# Usage: bench/threads.sh
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3}
CPU_DURATION=${CPU_DURATION:-10}
SCALE_DURATION=${SCALE_DURATION:-20}
OUT=${OUT:-$(mktemp -d -t heartbeat-threads.XXXXXX)}
mkdir -p "$OUT"

BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --locked -p heartbeat-net --bins >&2
fi
ulimit -n "$(ulimit -Hn)"

PID=""
PORT=""

# start TARGET [EXTRA...]: TARGET is t1-pinned, t1 or t2; sets PID and PORT; stderr to
# $OUT/stderr.
start() {
    PORT=$(free_port)
    local cpus=0-1 threads=1
    case $1 in
        t1-pinned) cpus=0 ;;
        t1) ;;
        t2) threads=2 ;;
    esac
    shift
    RUST_LOG=info taskset -c "$cpus" "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$PORT" \
        --threads "$threads" "$@" >/dev/null 2>"$OUT/stderr" &
    PID=$!
    wait_listening
}

stop() {
    kill -TERM "$PID"
    wait "$PID" || true
}

trap '[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; true' EXIT

load() {
    local label=$1
    shift
    taskset -c 1 "$BIN/heartbeat-load" -H 127.0.0.1 -p "$PORT" --json --watch-pid "$PID" "$@" \
        >"$OUT/last.json"
    cat "$OUT/last.json" >>"$OUT/$label.jsonl"
    echo "$label $(uptime | sed 's/.*load average: //')" >>"$OUT/loadavg"
}

echo "# bench/threads.sh $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "raw reports: $OUT" >&2

for run in $(seq "$RUNS"); do
    for target in t1-pinned t1 t2; do
        echo "(a) run $run/$RUNS: $target" >&2
        start "$target"
        load "a-$target" --clients 1000 --interval 10 --ramp 1 --duration "$CPU_DURATION"
        stop
    done
done

for target in t1 t2; do
    echo "(b) lock: $target" >&2
    start "$target" --measure-lock
    load "b-$target" --clients 1000 --interval 10 --ramp 1 --duration "$CPU_DURATION"
    stop
    grep -h "Core lock" "$OUT/stderr" | sed "s/^/$target: /" >>"$OUT/lock.txt" || true
done

for target in t1 t2; do
    echo "(c) 10,000 clients: $target" >&2
    start "$target"
    load "c-$target" --clients 10000 --interval 1000 --ramp 5 --duration "$SCALE_DURATION"
    stop
done
PID=""

python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1:]

def reports(label):
    with open(f"{out}/{label}.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]

print("\n## (a) 1,000 clients x 10 ms, medians of", runs, "runs\n")
print("| target | server CPU per heartbeat | each run (us) | acks/s achieved (each) | "
      "ack RTT p99 | server CPU % of one core |")
print("| --- | --- | --- | --- | --- | --- |")
for t in ["t1-pinned", "t1", "t2"]:
    rs = reports(f"a-{t}")
    cpu = [r["watched"][0]["cpu_us_per_heartbeat"] for r in rs]
    acks = [r["acks"] / r["duration_s"] for r in rs]
    p99 = statistics.median((r["rtt_us"] or {}).get("p99", float("nan")) for r in rs)
    util = statistics.median(c * a / 1e4 for c, a in zip(cpu, acks))
    print(f"| {t} | **{statistics.median(cpu):.2f} us** | {', '.join(f'{c:.2f}' for c in cpu)} "
          f"| {statistics.median(acks):,.0f} ({', '.join(f'{a:,.0f}' for a in acks)}) "
          f"| {p99 / 1000:.2f} ms | {util:.0f} % |")
print("\n## (b) the lock\n")
print(open(f"{out}/lock.txt").read())
print("## (c) 10,000 clients x 1 s\n")
print("| target | sent | acks | peak RSS | CPU per heartbeat | disconnects |")
print("| --- | --- | --- | --- | --- | --- |")
for t in ["t1", "t2"]:
    r = reports(f"c-{t}")[0]
    w = r["watched"][0]
    print(f"| {t} | {r['sent']:,} | {r['acks']:,} | {w['peak_rss_kib']:,} KiB "
          f"| {w['cpu_us_per_heartbeat']:.2f} us | {r['disconnects']} |")
PY

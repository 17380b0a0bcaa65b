#!/usr/bin/env bash
# Tune's advice, applied (issue 18): record a mixed fleet with the real binaries, ask
# `heartbeat-sim tune` for advice, then run the same fleet again against three servers at once
# (the defaults, each class's advice, the fleet-wide advice) and compare what each declared.
# 127.0.0.1 only; about 90 s of running, plus the build.
#
#   bench/tune-trace.sh                 # debug binaries (PROFILE=release for release ones)
#   KEEP=/tmp/tune-trace bench/tune-trace.sh   # keep the logs there
#
# The fleet, the same in both phases (times from the fleet's start):
#   100ms: web-1, web-k1, web-k2       250ms: api-1, api-k1, api-k2
#   1s:    batch-1, batch-paused, batch-k1, batch-k2
#   batch-paused is stopped (SIGSTOP) at 6 s for 1.5 s, at 12 s for 3 s and at 19 s for 2 s;
#   the *-k1 clients are killed (SIGKILL) at 22 s, the *-k2 clients at 23.3 s; the rest say
#   goodbye (SIGTERM) at 42 s. BUSY=1 also runs a busy loop for the first 20 s beside them
#   (off by default: the machine may be shared).
#
# Phase 1 records one server with the defaults (`--json`) and runs `tune` on it. Phase 2 runs
# every client once, heartbeating to three servers at once (`--server`, one connection each,
# the same heartbeats): "defaults" (no detector flags), "class" (`--client-settings` with the
# per-class settings file tune printed, as printed) and "fleet" (the fleet-wide flags). The report: per class and server, each killed client's detection time as the server
# measured it (the `down` transition's `since_last_ms`: silence since the last heartbeat, the
# T_D tune estimates) and the suspicions and downs of clients that were alive (mistakes), next
# to tune's own estimate from the recording.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-debug}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/$PROFILE
if [ "$PROFILE" = release ]; then
    cargo build --release -p heartbeat-net -p heartbeat-sim --bins >&2
else
    cargo build -p heartbeat-net -p heartbeat-sim --bins >&2
fi
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -z "${KEEP:-}" ] && rm -rf "$OUT"
    true
}
trap cleanup EXIT

declare -A EVERY=(
    [web-1]=100 [web-k1]=100 [web-k2]=100
    [api-1]=250 [api-k1]=250 [api-k2]=250
    [batch-1]=1000 [batch-paused]=1000 [batch-k1]=1000 [batch-k2]=1000
)
CLIENTS=(web-1 web-k1 web-k2 api-1 api-k1 api-k2 batch-1 batch-paused batch-k1 batch-k2)

# server NAME ARGS...: starts a server writing $OUT/NAME.jsonl; sets PORT.
server() {
    local name=$1
    shift
    PORT=$(free_port)
    RUST_LOG=warn "$BIN/heartbeat-server" --bind 127.0.0.1 -p "$PORT" --json "$@" \
        >"$OUT/$name.jsonl" 2>"$OUT/$name.err" &
    PIDS+=($!)
    eval "SERVER_PID_${name//-/_}=$!"
    sleep 0.5
}

# fleet PHASE SERVERS_OF: runs the fleet's script; SERVERS_OF CLIENT prints its --server flags.
fleet() {
    local phase=$1 of=$2 c busy=
    declare -A PID=()
    for c in "${CLIENTS[@]}"; do
        # shellcheck disable=SC2046
        RUST_LOG=warn "$BIN/heartbeat-client" --id "$c" --interval "${EVERY[$c]}" \
            $($of "$c") >/dev/null 2>&1 &
        PID[$c]=$!
        PIDS+=($!)
    done
    local t0
    t0=$(now)
    if [ "${BUSY:-0}" = 1 ]; then
        timeout 20 sh -c 'while :; do :; done' &
        busy=$!
    fi
    at() { sleep "$(python3 -c "import sys; print(max(0, $t0 + $1 - float(sys.argv[1])))" "$(now)")"; }
    for stop in "6 1.5" "12 3" "19 2"; do
        read -r from length <<<"$stop"
        at "$from"
        kill -STOP "${PID[batch-paused]}"
        echo "stop batch-paused $(now) $length" >>"$OUT/$phase.faults"
        sleep "$length"
        kill -CONT "${PID[batch-paused]}"
    done
    at 22
    for c in web-k1 api-k1 batch-k1; do
        kill -9 "${PID[$c]}"
        echo "kill $c $(now)" >>"$OUT/$phase.faults"
    done
    at 23.3
    for c in web-k2 api-k2 batch-k2; do
        kill -9 "${PID[$c]}"
        echo "kill $c $(now)" >>"$OUT/$phase.faults"
    done
    at 42
    for c in "${CLIENTS[@]}"; do kill -TERM "${PID[$c]}" 2>/dev/null || true; done
    for c in "${CLIENTS[@]}"; do wait "${PID[$c]}" 2>/dev/null || true; done
    [ -n "$busy" ] && { wait "$busy" 2>/dev/null || true; }
    sleep 0.5
}

stop_server() {
    local pid
    eval "pid=\$SERVER_PID_${1//-/_}"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
}

# Phase 1: record with the defaults.
echo "phase 1: recording (45 s)" >&2
server record
RECORD_PORT=$PORT
record_of() { echo "-H 127.0.0.1 -p $RECORD_PORT"; }
fleet record record_of
stop_server record
"$BIN/heartbeat-sim" tune "$OUT/record.jsonl" --json >"$OUT/tune.json" 2>"$OUT/tune.err"
"$BIN/heartbeat-sim" tune "$OUT/record.jsonl" >"$OUT/tune.txt" 2>>"$OUT/tune.err"

# Phase 2: the same fleet against the defaults, each class's advice and the fleet's at once.
python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["advice"]["client_settings"], end="")' \
    "$OUT/tune.json" >"$OUT/clients.toml"
flags() { # flags CLASS: the recommended flags of a class (or "fleet"), or none (the defaults)
    python3 - "$OUT/tune.json" "$1" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))["advice"]
g = a["fleet"] if sys.argv[2] == "fleet" else next(c for c in a["classes"] if c["class"] == sys.argv[2])
print((g["recommended"] or {}).get("flags", ""))
PY
}
echo "phase 2: the defaults, per-class advice and fleet advice at once (45 s)" >&2
server defaults
DEFAULTS_PORT=$PORT
# shellcheck disable=SC2046
server fleet $(flags fleet)
FLEET_PORT=$PORT
server class --client-settings "$OUT/clients.toml"
CLASS_PORT=$PORT
rerun_of() {
    echo "--server 127.0.0.1:$DEFAULTS_PORT --server 127.0.0.1:$CLASS_PORT --server 127.0.0.1:$FLEET_PORT"
}
fleet rerun rerun_of
for s in defaults fleet class; do stop_server "$s"; done

echo "# bench/tune-trace.sh $(date -u +%Y-%m-%dT%H:%MZ), $PROFILE binaries, $(nproc) cores," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
sed -n '/^advice (/,/^$/p' "$OUT/tune.txt"
grep -A1 '^fleet-wide' "$OUT/tune.txt"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
every = {"web": "100ms", "api": "250ms", "batch": "1s"}
classes = ["100ms", "250ms", "1s"]
def cls(c): return every[c.split("-")[0]]
kills = {}
for line in open(os.path.join(out, "rerun.faults")):
    w = line.split()
    if w[0] == "kill":
        kills[w[1]] = float(w[2])
def read(name):
    ev = []
    for line in open(os.path.join(out, name + ".jsonl")):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if v.get("event") == "transition":
            ev.append(v)
    return ev
def judge(name, wanted):
    """Per class in `wanted`: the killed clients' detection times (ms) and the mistakes."""
    res = {c: {"td": [], "suspect": 0, "down": 0} for c in wanted}
    for v in read(name):
        c = v["client"]
        k = cls(c)
        if k not in res or v["to"] not in ("suspect", "down"):
            continue
        t = float(v.get("time") or 0)
        killed = c in kills and t >= kills[c]
        if killed and v["to"] == "down":
            res[k]["td"].append(v["since_last_ms"])
        elif not killed:
            res[k][v["to"]] += 1
    return res
tune = json.load(open(os.path.join(out, "tune.json")))["advice"]
est = {c["class"]: c for c in tune["classes"]}
rows = {"defaults": judge("defaults", classes), "fleet": judge("fleet", classes)}
rows["class"] = judge("class", classes)
def p(x): return "-" if x is None else f"{x:.0f}"
print()
print("phase 2, measured by the servers (ms; T_D: since_last_ms of each killed client's down;")
print("mistakes: suspect / down transitions of clients alive at the time):")
print(f"{'class':6}  {'server':8}  {'setting':30}  {'T_D kills':>15}  {'worst':>6}  {'mistakes':>8}  {'tune p99':>8}")
for k in classes:
    e = est.get(k, {})
    for server in ("defaults", "class", "fleet"):
        r = rows[server][k]
        g = e.get("defaults") if server == "defaults" else (e.get("recommended") if server == "class" else tune["fleet"]["recommended"])
        label = (g or {}).get("label", "phi (no pick: defaults)")
        # tune's estimate for this class and setting, from the recording
        if server == "fleet":
            g = e.get("fleet_pick")
        est_p99 = (g or {}).get("detection_p99_ms")
        td = r["td"]
        print(f"{k:6}  {server:8}  {label:30}  {','.join(p(x) for x in td):>15}  {p(max(td) if td else None):>6}"
              f"  {r['suspect']:>3} / {r['down']:<2}  {p(est_p99):>8}")
PY

#!/usr/bin/env python3
"""Pushers for bench/pushgateway.sh: CLIENTS clients, each PUTting its group to a Pushgateway
once per interval on its own drift-free grid (phases spread evenly), over kept-alive HTTP/1.1
connections, loopback only, for a bounded window. Measures the Pushgateway process (--pid) over
the window from /proc: CPU time (user + system) per push offered and per push answered (2xx),
and its peak resident memory. Prints one JSON object."""

import argparse
import http.client
import json
import os
import resource
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def pusher(args, ids, start, end, counts, lock):
    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
    interval = args.interval_ms / 1000.0
    seq = {i: 0 for i in ids}
    # Each client's phase: spread over the interval by its index.
    phase = {i: (i % args.clients) * interval / args.clients for i in ids}
    offered = answered = skipped = errors = 0
    k = 0
    while True:
        # The next due push over this thread's clients, in grid order.
        due = min(ids, key=lambda i: start + phase[i] + seq[i] * interval)
        at = start + phase[due] + seq[due] * interval
        if at >= end:
            break
        now = time.monotonic()
        if at > now:
            time.sleep(at - now)
        elif now - at > interval:
            # Woke up more than an interval late: this push is skipped (as heartbeat-load does).
            seq[due] += 1
            skipped += 1
            offered += 1
            continue
        seq[due] += 1
        offered += 1
        body = (
            f"heartbeat_seq {seq[due]}\nheartbeat_timestamp_seconds {time.time():.3f}\n"
        ).encode()
        try:
            conn.request(
                "PUT",
                f"/metrics/job/heartbeat/instance/load-{due}",
                body=body,
                headers={"Content-Type": "text/plain"},
            )
            resp = conn.getresponse()
            resp.read()
            if 200 <= resp.status < 300:
                answered += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
        k += 1
    conn.close()
    with lock:
        counts["offered"] += offered
        counts["answered"] += answered
        counts["skipped"] += skipped
        counts["errors"] += errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--interval-ms", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--ramp", type=float, default=2)
    ap.add_argument("--threads", type=int, default=50)
    args = ap.parse_args()

    counts = {"offered": 0, "answered": 0, "skipped": 0, "errors": 0}
    lock = threading.Lock()
    start = time.monotonic() + args.ramp
    end = start + args.duration
    groups = [list(range(t, args.clients, args.threads)) for t in range(args.threads)]
    threads = [
        threading.Thread(target=pusher, args=(args, g, start, end, counts, lock), daemon=True)
        for g in groups
        if g
    ]
    for t in threads:
        t.start()
    time.sleep(max(0.0, start - time.monotonic()))
    cpu0 = cpu_seconds(args.pid)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(max(0.0, end - time.monotonic()))
    cpu1 = cpu_seconds(args.pid)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    # Answers still in flight at the end are waited for (bounded by the 5 s timeout).
    for t in threads:
        t.join(timeout=10)
    cpu = cpu1 - cpu0
    out = dict(counts)
    out.update(
        clients=args.clients,
        interval_ms=args.interval_ms,
        duration_s=args.duration,
        cpu_s=round(cpu, 3),
        cpu_us_per_offered=round(cpu * 1e6 / max(1, counts["offered"]), 1),
        cpu_us_per_answered=round(cpu * 1e6 / max(1, counts["answered"]), 1),
        peak_rss_kib=peak_rss_kib(args.pid),
        # The pushers' own CPU over the window: they must not be what limits the answers.
        pushers_cpu_s=round(
            self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime, 3
        ),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()

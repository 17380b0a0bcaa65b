#!/usr/bin/env python3
"""Minimises an AFL++ queue to the smallest input per edge, for committing as a corpus.

    python3 fuzz/cmin.py TARGET_BINARY QUEUE_DIR OUT_DIR

Runs `cargo afl showmap` on every input (smallest first) and keeps, for each edge it reports
(hit counts ignored), the first input that reached it. `cargo afl cmin` did the same in
principle but read no coverage from afl.rs's persistent-mode binaries on this machine.
"""

import os
import shutil
import subprocess
import sys
import tempfile


def main() -> None:
    target, queue, out = sys.argv[1:4]
    files = [os.path.join(queue, f) for f in os.listdir(queue) if f.startswith("id:")]
    files.sort(key=lambda f: (os.path.getsize(f), f))
    first = {}
    with tempfile.NamedTemporaryFile() as cov:
        for f in files:
            with open(f, "rb") as data:
                subprocess.run(
                    ["cargo", "afl", "showmap", "-q", "-t", "5000", "-o", cov.name, "--", target],
                    stdin=data,
                    check=False,
                )
            with open(cov.name) as edges:
                for line in edges:
                    edge = line.strip().split(":")[0]
                    if edge:
                        first.setdefault(edge, f)
    kept = sorted(set(first.values()))
    os.makedirs(out, exist_ok=True)
    for i, f in enumerate(kept):
        shutil.copy(f, os.path.join(out, "min-%04d" % i))
    size = sum(os.path.getsize(f) for f in kept)
    print(f"{len(files)} inputs, {len(first)} edges, kept {len(kept)} inputs ({size} bytes)")


if __name__ == "__main__":
    main()

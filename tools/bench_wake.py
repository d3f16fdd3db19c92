#!/usr/bin/env python3
"""What small frame-path steps cost right after the thread slept, against after it spun.

At camera rate the pipeline's threads sleep ~33 ms between frames, so each frame's
first steps run on whatever the machine left of the caches (and, on a virtual machine,
of the vCPU). This prints, per step, the median CPU time of the first call after a
``--gap-ms`` sleep and after a ``--gap-ms`` busy wait (the same gap, the CPU kept), and
what reading the thread CPU clock costs (the pipeline reads it five times a frame). A
machine where "after sleep" is close to "after spin" keeps its caches over idle gaps;
where it is far above, the camera-rate overhead figure measures the machine.

    python tools/bench_wake.py [--gap-ms 2] [--calls 300] [--json]

Prints figures only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np


def steps() -> dict[str, Callable[[], object]]:
    logits = np.random.default_rng(0).standard_normal((1, 896, 1)).astype(np.float32)
    frame = np.zeros((480, 640, 3), np.uint8)
    small = np.zeros((96, 128, 3), np.uint8)
    values = logits.ravel().tolist()
    return {
        "python: max over a 896-float list": lambda: max(values),
        "numpy: reshape (a view, no data)": lambda: logits.reshape(-1),
        "numpy: empty(3) (an allocation)": lambda: np.empty(3),
        "numpy: max over 896 logits": lambda: float(logits.max()),
        "cv2: cvtColor 128x96 into a buffer": lambda: cv2.cvtColor(
            small, cv2.COLOR_BGR2RGB, dst=small
        ),
        "cv2: resize 640x480 -> 128x96": lambda: cv2.resize(frame, (128, 96), dst=small),
    }


def first_call_us(fn: Callable[[], object], gap_s: float, calls: int, *, spin: bool) -> float:
    """Median thread CPU time of ``fn`` as the first call after a gap (µs)."""
    samples = []
    for _ in range(calls):
        if spin:
            until = time.perf_counter() + gap_s
            while time.perf_counter() < until:
                pass
        else:
            time.sleep(gap_s)
        start = time.thread_time_ns()
        fn()
        samples.append(time.thread_time_ns() - start)
    return statistics.median(samples) / 1000.0


def clock_cost_ns(calls: int = 100_000) -> dict[str, float]:
    """Wall time of one clock read, in a tight loop (ns)."""
    out = {}
    for name, clock in (
        ("thread_time_ns", time.thread_time_ns),
        ("perf_counter_ns", time.perf_counter_ns),
    ):
        start = time.perf_counter_ns()
        for _ in range(calls):
            clock()
        out[name] = round((time.perf_counter_ns() - start) / calls, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gap-ms", type=float, default=2.0)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    gap_s = args.gap_ms / 1000.0
    rows = []
    for name, fn in steps().items():
        for _ in range(200):  # warm: code loaded, buffers touched
            fn()
        warm = []
        for _ in range(2000):
            start = time.thread_time_ns()
            fn()
            warm.append(time.thread_time_ns() - start)
        rows.append(
            {
                "step": name,
                "warm_us": round(statistics.median(warm) / 1000.0, 1),
                "after_spin_us": round(first_call_us(fn, gap_s, args.calls, spin=True), 1),
                "after_sleep_us": round(first_call_us(fn, gap_s, args.calls, spin=False), 1),
            }
        )
    out = {"gap_ms": args.gap_ms, "clock_read_ns": clock_cost_ns(), "steps": rows}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"clock reads (ns each): {out['clock_read_ns']}; gap {args.gap_ms:g} ms")
    print(f"{'step':38s} {'warm':>7s} {'after spin':>11s} {'after sleep':>12s}  (µs)")
    for row in rows:
        print(
            f"{row['step']:38s} {row['warm_us']:7.1f} {row['after_spin_us']:11.1f} "
            f"{row['after_sleep_us']:12.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""How much dearer the frame path's work gets when it runs after a pause, not in a tight loop.

The pipeline preprocesses a frame and decodes an invoke's outputs once per frame, each
after an invoke (or a sleep) of ~1 ms or more. Measured alone in a tight loop the same
calls take a fraction of what they take in the pipeline; this tool shows why, by
running ``prepare`` and the decoder on the sample model and clip frames after different
gaps, one gap kind per loop:

* ``none``: back to back (the microbenchmark figure);
* ``invoke``: one real invoke of the model before each call;
* ``spin``: the same time spent in a pure-Python busy loop (touches almost no memory);
* ``sleep``: the same time asleep (the core idles, as between camera frames).

With ``frames = cycle`` every call gets another of 8 decoded frames (as a camera gives
a new frame each time); with ``same`` always the first one. ``spin`` against ``invoke``
separates what the invoke's own memory traffic costs the next call from what the mere
passing of time costs it (caches and predictors shared with whatever else runs).

``control_us`` is a small-footprint reference timed after the same gaps: eight SHA-256
hashes of one 4 KiB block (a few cache lines of code and data). Where it stays flat
while ``prepare`` and the decoder slow down, the core itself is not slower after a gap:
what the pause cost is the large working set of numpy, OpenCV and the interpreter,
evicted while the thread was not running.

``--steps`` breaks that down: single small steps of the frame path (a numpy ``max``,
a ``cvtColor`` into a buffer, a ``resize``...), each timed in thread CPU as the first
call after a ``--gap-ms`` sleep against after a busy wait of the same length, and what
reading the thread CPU clock costs (the pipeline reads it five times a frame). A
machine where "after sleep" is close to "after spin" keeps its caches over idle gaps;
where it is far above, the camera-rate overhead figure measures the machine.

    python tools/bench_gap.py --calls 1500 --json
    python tools/bench_gap.py --steps [--gap-ms 2] [--calls 300]

Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402 - after sys.path
import numpy as np  # noqa: E402 - after sys.path
import numpy.typing as npt  # noqa: E402 - after sys.path

from agent.assets import find_asset  # noqa: E402 - after sys.path
from agent.pipeline.bench import BenchSettings, bench_config  # noqa: E402 - after sys.path
from agent.pipeline.bench_sources import load_frames  # noqa: E402 - after sys.path
from agent.pipeline.model import LoadedModel, backend_options, load_model  # noqa: E402

Gap = Callable[[], None]


def spin_for(seconds: float) -> Gap:
    def spin() -> None:
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass

    return spin


CONTROL_BLOCK = bytes(4096)


def control() -> None:
    """The small-footprint reference: its code and data stay within a few cache lines."""
    for _ in range(8):
        hashlib.sha256(CONTROL_BLOCK).digest()


def invoke(loaded: LoadedModel, tensor: npt.NDArray[np.generic]) -> None:
    loaded.backend.infer(tensor)


def measure(
    loaded: LoadedModel,
    frames: list[npt.NDArray[np.uint8]],
    gap: Gap,
    calls: int,
) -> dict[str, float]:
    """Mean microseconds of ``prepare`` and of the decoder, each right after ``gap``."""
    tensor = np.empty_like(loaded.backend.input_buffer())
    # Each frame's transform and outputs, made once: the loop below only decodes them.
    decoded = []
    for frame in frames:
        transform = loaded.preprocessor.prepare(frame, tensor)
        outputs = [np.array(out, copy=True) for out in loaded.backend.infer(tensor)]
        decoded.append((transform, outputs))
    prepare_ns = decode_ns = control_ns = 0
    for i in range(calls):
        gap()
        start = time.perf_counter_ns()
        loaded.preprocessor.prepare(frames[i % len(frames)], tensor)
        prepare_ns += time.perf_counter_ns() - start
        transform, outputs = decoded[i % len(frames)]
        gap()
        start = time.perf_counter_ns()
        loaded.decoder(outputs, transform)
        decode_ns += time.perf_counter_ns() - start
        gap()
        start = time.perf_counter_ns()
        control()
        control_ns += time.perf_counter_ns() - start
    return {
        "prepare_us": round(prepare_ns / calls / 1000.0, 1),
        "decode_us": round(decode_ns / calls / 1000.0, 1),
        "control_us": round(control_ns / calls / 1000.0, 1),
    }


def small_steps() -> dict[str, Callable[[], object]]:
    """Single steps of the frame path, on data the size of the sample model's."""
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


def first_call_us(fn: Callable[[], object], gap: Gap, calls: int) -> float:
    """Median thread CPU time (µs) of ``fn`` as the first call after ``gap``."""
    samples = []
    for _ in range(calls):
        gap()
        start = time.thread_time_ns()
        fn()
        samples.append(time.thread_time_ns() - start)
    return statistics.median(samples) / 1000.0


def clock_cost_ns(calls: int = 100_000) -> dict[str, float]:
    """Wall time of one clock read in a tight loop (ns)."""
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


def steps_main(gap_ms: float, calls: int, as_json: bool) -> int:
    """``--steps``: each small step back to back, after a busy wait and after a sleep."""
    cv2.setNumThreads(1)
    gap_s = gap_ms / 1000.0
    rows = []
    for name, fn in small_steps().items():
        for _ in range(200):  # warm: code loaded, buffers touched
            fn()
        rows.append(
            {
                "step": name,
                "warm_us": round(first_call_us(fn, lambda: None, 2000), 1),
                "after_spin_us": round(first_call_us(fn, spin_for(gap_s), calls), 1),
                "after_sleep_us": round(first_call_us(fn, lambda: time.sleep(gap_s), calls), 1),
            }
        )
    out = {"gap_ms": gap_ms, "clock_read_ns": clock_cost_ns(), "steps": rows}
    if as_json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"clock reads (ns each): {out['clock_read_ns']}; gap {gap_ms:g} ms")
    print(f"{'step':38s} {'warm':>7s} {'after spin':>11s} {'after sleep':>12s}  (µs)")
    for row in rows:
        print(
            f"{row['step']:38s} {row['warm_us']:7.1f} {row['after_spin_us']:11.1f} "
            f"{row['after_sleep_us']:12.1f}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=None, help="calls per gap kind")
    parser.add_argument("--model", type=Path, default=None, help="default: the sample model")
    parser.add_argument("--clip", type=Path, default=None, help="default: the sample clip")
    parser.add_argument("--steps", action="store_true", help="single small steps instead")
    parser.add_argument("--gap-ms", type=float, default=2.0, help="--steps: the gap")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.steps:
        return steps_main(args.gap_ms, args.calls or 300, args.json)
    args.calls = args.calls or 1500
    model = args.model or find_asset("models/face_detection_short_range.tflite")
    clip = args.clip or find_asset("clips/sample.mp4")
    if model is None or clip is None:
        sys.stderr.write("bench_gap: the sample model or clip is missing (make assets)\n")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-gap-") as state:
        config = bench_config(BenchSettings(model=model, clip=clip, threads=1), Path(state))
    slot = config.models[0]
    loaded = load_model(slot, "tflite", model, backend_options(config, slot, model))
    try:
        frames = load_frames(clip)
        probe = np.empty_like(loaded.backend.input_buffer())
        start = time.perf_counter()
        for _ in range(50):
            loaded.backend.infer(probe)
        invoke_s = (time.perf_counter() - start) / 50
        gaps: dict[str, Gap] = {
            "none": lambda: None,
            "invoke": lambda: invoke(loaded, probe),
            "spin": spin_for(invoke_s),
            "sleep": lambda: time.sleep(invoke_s),
        }
        result: dict[str, Any] = {"invoke_ms": round(invoke_s * 1000.0, 3), "gaps": {}}
        for name, gap in gaps.items():
            result["gaps"][name] = {
                "cycle": measure(loaded, frames, gap, args.calls),
                "same": measure(loaded, frames[:1], gap, args.calls),
            }
    finally:
        loaded.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"gap = one invoke's time ({result['invoke_ms']} ms); mean us per call")
    print(f"{'gap':8} {'frames':6} {'prepare':>8} {'decode':>8} {'control':>8}")
    for name, by_frames in result["gaps"].items():
        for frames_kind, f in by_frames.items():
            print(
                f"{name:8} {frames_kind:6} {f['prepare_us']:8.1f} {f['decode_us']:8.1f}"
                f" {f['control_us']:8.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak: the full pipeline (sample clip looping, real model, SQLite outbox) for a while.

Samples this process's RSS and open file descriptors once a second and reports the
least-squares slope of each, so a slow leak shows as a number, not as a feeling:

    .venv/bin/python tools/soak.py --seconds 1800 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent import log
from agent.assets import find_asset
from agent.config.root import AgentConfig
from agent.pipeline.runner import Pipeline
from agent.uplink.outbox import Outbox
from agent.uplink.topics import Topics

WARMUP_S = 5.0  # model load, first allocations and the first ring slots settle first


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def soak_config(clip: Path, model: Path, state_dir: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(state_dir)},
            "outbox": {"fsync": "off"},
            "cameras": [{"name": "door", "source": f"file:{clip}", "fps": 15, "loop": True}],
            "models": [{"slot": "detector", "path": str(model), "threshold": 0.5}],
        }
    )


def soak(seconds: float, clip: Path, model: Path, state_dir: Path) -> dict[str, Any]:
    cfg = soak_config(clip, model, state_dir)
    topics = Topics("ea/v1", cfg.device.id)
    stop = threading.Event()
    outbox = Outbox(state_dir, cfg.outbox, topics.detection_counts)
    outbox.start()
    pipeline = Pipeline(cfg, outbox.sink(topics.detection), state_dir, None, stop=stop)
    pipeline.start()
    times: list[float] = []
    rss: list[float] = []
    fds: list[float] = []
    began = time.monotonic()
    try:
        stop.wait(WARMUP_S)
        while (now := time.monotonic() - began) < WARMUP_S + seconds:
            times.append(now / 60.0)
            rss.append(rss_mb())
            fds.append(float(open_fds()))
            stop.wait(1.0)
        stats = pipeline.stats_snapshot()
    finally:
        stop.set()
        pipeline.stop()
        outbox.stop()
    camera = stats["cameras"]["door"]
    model_stats = stats["models"]["detector"]
    return {
        "seconds": seconds,
        "samples": len(times),
        "frames_captured": camera["frames_captured"],
        "events": model_stats["events"],
        "inference_errors": model_stats["errors"],
        "rss_mb": {"first": round(rss[0], 1), "last": round(rss[-1], 1), "max": round(max(rss), 1)},
        "rss_slope_mb_per_min": round(slope(times, rss), 4),
        "fds": {"first": int(fds[0]), "last": int(fds[-1]), "max": int(max(fds))},
        "fd_slope_per_min": round(slope(times, fds), 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time after warm-up")
    parser.add_argument("--clip", type=Path, default=None, help="video (default: sample clip)")
    parser.add_argument("--model", type=Path, default=None, help="model (default: short range)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    log.configure(level="warning")
    clip = args.clip or find_asset("clips/sample.mp4")
    model = args.model or find_asset("models/face_detection_short_range.tflite")
    if clip is None or model is None:
        print("sample assets missing: run tools/fetch_assets.py", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edge-agent-soak-") as state:
        result = soak(args.seconds, clip, model, Path(state))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Cost of a shadow trial: the serving model's fps with and without the shadow beside it.

A real pipeline serves the sample clip replayed faster than the model can take it (so
any CPU the shadow takes shows in the serving fps); in turn it runs alone, with the
shadow at each ``--duty``, and alone again. The shadow is the daemon's (``ShadowTrial``:
a reference copy of the serving model and the candidate on the same sampled frame).

    .venv/bin/python tools/bench_shadow.py --seconds 10 --duty 0.1 --duty 1.0
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.assets import find_asset
from agent.config.root import AgentConfig
from agent.events.types import DetectionEvent
from agent.pipeline.bench import ReplaySource, load_frames
from agent.pipeline.runner import Pipeline
from agent.update.store.shadow import ShadowBudget, ShadowTrial
from agent.update.store.slotmodel import SlotDetectors
from agent.update.trust.trialspec import MAX_SHADOW_FRAMES, ShadowSpec

WARMUP_S = 2.0
REPLAY_FPS = 1000.0  # faster than any model here: the serving loop is never idle


def _config(model: Path, clip: Path, state: Path, threads: int) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(state)},
            "cameras": [{"name": "bench", "source": f"file:{clip}", "loop": True}],
            "models": [{"slot": "bench", "path": str(model), "threads": threads}],
        }
    )


def _served(pipeline: Pipeline) -> int:
    return pipeline.workers["bench"].feeds[0].inferred.total


def _alone(pipeline: Pipeline, seconds: float) -> dict[str, Any]:
    before, start = _served(pipeline), time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - start
    return {"shadow": None, "serving_fps": round((_served(pipeline) - before) / elapsed, 2)}


def _with_shadow(
    pipeline: Pipeline, config: AgentConfig, candidate: Path, seconds: float, duty: float
) -> dict[str, Any]:
    trial = ShadowTrial(
        pipeline,
        SlotDetectors(config),
        {"bench": ["bench"]},
        threading.Event(),
        ShadowBudget(duty=duty),
    )
    spec = ShadowSpec(min_agreement=0.0, min_frames=MAX_SHADOW_FRAMES, max_s=max(1, round(seconds)))
    before, start = _served(pipeline), time.perf_counter()
    outcome = trial.run("bench", candidate, spec)
    elapsed = time.perf_counter() - start
    served = _served(pipeline) - before
    figures = outcome.figures
    compared = int(figures.get("frames_compared", 0))
    return {
        "shadow": {"duty_asked": duty, **figures},
        "serving_fps": round(served / elapsed, 2),
        # Two extra inferences (reference copy + candidate) per compared frame.
        "extra_inferences_per_served_frame": round(2 * compared / served, 3) if served else None,
    }


def _medians(rows: list[dict[str, Any]]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for row in rows:
        shadow = row["shadow"]
        key = "no shadow" if shadow is None else f"shadow duty {shadow['duty_asked']}"
        groups.setdefault(key, []).append(row["serving_fps"])
    return {key: round(statistics.median(values), 2) for key, values in groups.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="serving model (sample)")
    parser.add_argument("--candidate", type=Path, default=None, help="default: --model")
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="serving interpreter threads")
    parser.add_argument("--duty", type=float, action="append", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model = args.model or find_asset("models/face_detection_short_range.tflite")
    clip = args.clip or find_asset("clips/sample.mp4")
    if model is None or clip is None:
        parser.error("sample assets missing: run tools/fetch_assets.py")
    candidate = args.candidate or model
    frames = load_frames(clip)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-shadow-") as state:
        config = _config(model, clip, Path(state), args.threads)

        def sink(event: DetectionEvent) -> None:
            del event

        opener = functools.partial(ReplaySource, frames, REPLAY_FPS)
        pipeline = Pipeline(config, sink, Path(state), paced=False, opener=opener)
        pipeline.start()
        try:
            time.sleep(WARMUP_S)
            # Alternated rounds: a shared machine's load drifts, so each shadow window sits
            # between windows without it, and the medians are compared.
            for _ in range(args.rounds):
                rows.append(_alone(pipeline, args.seconds))
                rows.extend(
                    _with_shadow(pipeline, config, candidate, args.seconds, duty)
                    for duty in args.duty or [0.1]
                )
            rows.append(_alone(pipeline, args.seconds))
        finally:
            pipeline.stop()
    medians = _medians(rows)
    report: dict[str, Any] = {
        "model": model.name,
        "candidate": candidate.name,
        "rows": rows,
        "median_fps": medians,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"serving {model.name}, candidate {candidate.name}, {args.threads} thread(s)")
    for row in rows:
        shadow = row["shadow"]
        if shadow is None:
            print(f"  no shadow          serving {row['serving_fps']:7.2f} fps")
            continue
        print(
            f"  shadow duty {shadow['duty_asked']:<5}  serving {row['serving_fps']:7.2f} fps, "
            f"{shadow['frames_compared']} frames compared in {shadow['seconds']} s, "
            f"{shadow['shadow_ms_per_frame']} ms each (2 inferences), "
            f"{row['extra_inferences_per_served_frame']} extra inferences per served frame, "
            f"duty ended at {shadow['duty']}"
        )
    for condition, fps in medians.items():
        print(f"  median {condition}: {fps} fps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

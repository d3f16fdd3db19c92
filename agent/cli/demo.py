"""``edge-agent demo``: the whole pipeline on the bundled sample clip, no camera, no broker."""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent import log
from agent.assets import REASON_SAMPLE_MISSING, sample_asset
from agent.cli.slot import add_config_options, configured_model, model_entry
from agent.config.root import AgentConfig
from agent.errors import ModelLoadError, SourceOpenError
from agent.events.types import DetectionEvent

SAMPLE_CLIP = "clips/sample.mp4"
SAMPLE_MODEL = "models/face_detection_short_range.tflite"
DEMO_SLOT = "detector"
DEFAULT_THRESHOLD = 0.6
EVENT_QUEUE_MAX = 1000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the pipeline on the bundled sample clip and model",
        description="Run capture, inference and events on the sample clip; no camera or broker.",
    )
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="stop after N seconds (default: end of clip)"
    )
    parser.add_argument("--model", type=Path, default=None, help="a BlazeFace model file")
    add_config_options(parser)
    parser.add_argument(
        "--clip", type=Path, default=None, help="a video file instead of the sample"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help=f"minimum score (default: the config's, else {DEFAULT_THRESHOLD})",
    )
    parser.set_defaults(func=run)


def find_sample(given: Path | None, relative: str) -> Path:
    """The file given on the command line, else the sample (the packaged clip is rendered)."""
    if given is None:
        return sample_asset(relative)
    if not given.is_file():
        raise SourceOpenError(
            f"{REASON_SAMPLE_MISSING}: {given} not found",
            camera="sample",
            source=str(given),
            reason=REASON_SAMPLE_MISSING,
        )
    return given


def demo_config(
    clip: Path,
    model: Path,
    state_dir: Path,
    threshold: float | None,
    entry: dict[str, Any] | None = None,
) -> AgentConfig:
    """The sample camera and one model: ``entry`` (a configured slot) or BlazeFace at ``model``."""
    slot: dict[str, Any] = dict(entry) if entry else {"slot": DEMO_SLOT, "decoder": "blazeface"}
    slot["path"] = str(model)
    if threshold is not None or not entry:
        slot["threshold"] = DEFAULT_THRESHOLD if threshold is None else threshold
    return AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(state_dir)},
            "cameras": [{"name": "sample", "source": f"file:{clip}", "fps": 15}],
            "models": [slot],
        }
    )


def _print_event(event: DetectionEvent) -> None:
    faces = ", ".join(
        f"{d.label} {d.score:.2f} [{', '.join(f'{v:.0f}' for v in d.box)}]"
        for d in event.detections
    )
    print(f"seq {event.seq:>4}  frame {event.frame_seq:>4}  {event.latency_ms:6.2f} ms  {faces}")


def _summary(
    stats: dict[str, Any], slot: str, events: int, dropped_events: int, elapsed_s: float
) -> None:
    cam = stats["cameras"]["sample"]
    model = stats["models"][slot]
    runtime = model["runtime"] or {}
    print()
    print(
        f"summary after {elapsed_s:.1f} s ({runtime.get('name', '?')} {runtime.get('version', '')})"
    )
    print(
        f"  frames captured {cam['frames_captured']}, dropped {cam['frames_dropped']}, "
        f"events {events} (not shown: {dropped_events})"
    )
    stages = ("capture_age_ms", "preprocess_ms", "handoff_ms", "inference_ms", "postprocess_ms")
    for key in (*stages, "e2e_ms"):
        figures = model[key]
        print(
            f"  {key:<15} p50 {figures['p50']:7.3f}  p95 {figures['p95']:7.3f}  "
            f"n {figures['n']:.0f}"
        )


def run(args: argparse.Namespace) -> int:
    # A short command: no logger caching, so in-process callers (tests) keep their log capture.
    log.configure(level=getattr(args, "log_level", None) or "warning", cache_loggers=False)
    clip = find_sample(args.clip, SAMPLE_CLIP)
    entry = None
    if args.config is not None:
        configured = configured_model(args.config, args.slot)
        entry = model_entry(configured)
        model = find_sample(Path(configured.path), SAMPLE_MODEL)
    else:
        model = find_sample(args.model, SAMPLE_MODEL)
    events: queue.Queue[DetectionEvent] = queue.Queue(maxsize=EVENT_QUEUE_MAX)
    dropped = 0

    # Imported here: every edge-agent command imports this module to register it, and
    # only demo needs OpenCV and the pipeline (~20 MB resident).
    from agent.pipeline.runner import Pipeline  # noqa: PLC0415 - heavy, demo only

    def sink(event: DetectionEvent) -> None:
        nonlocal dropped
        try:
            events.put_nowait(event)
        except queue.Full:
            dropped += 1

    shown = 0
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as state:
        config = demo_config(clip, model, Path(state), args.threshold, entry)
        slot = config.models[0].slot
        pipeline = Pipeline(config, sink, Path(state))
        pipeline.start()
        start = time.monotonic()
        try:
            health = pipeline.health_snapshot()[f"model:{slot}"]
            if health["status"] == "down":
                raise ModelLoadError(health["detail"], model=str(model))
            while not pipeline.sources_ended():
                if args.seconds and time.monotonic() - start >= args.seconds:
                    break
                try:
                    _print_event(events.get(timeout=0.2))
                    shown += 1
                except queue.Empty:
                    continue
        finally:
            pipeline.stop()
        while not events.empty():
            _print_event(events.get_nowait())
            shown += 1
        _summary(pipeline.stats_snapshot(), slot, shown, dropped, time.monotonic() - start)
    sys.stdout.flush()
    return 0

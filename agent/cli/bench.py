"""``edge-agent bench``: raw invoke loop and full pipeline on the same model and threads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agent import log
from agent.cli.common import print_json
from agent.cli.demo import SAMPLE_CLIP, SAMPLE_MODEL, find_sample
from agent.pipeline.bench import BenchSettings, run_bench


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="raw invoke loop vs full pipeline on one model",
        description="Measure the raw invoke loop and the full pipeline (file source flat-out).",
    )
    parser.add_argument("--model", type=Path, default=None, help="model file (default: sample)")
    parser.add_argument("--clip", type=Path, default=None, help="video file (default: sample)")
    parser.add_argument("--seconds", type=float, default=10.0, help="total run time, split in two")
    parser.add_argument("--threads", type=int, default=2, help="interpreter threads")
    parser.add_argument("--backend", default="tflite", help="tflite, onnx or tensorrt")
    parser.add_argument(
        "--decoder",
        default="blazeface",
        choices=["blazeface", "ssd_postprocess", "yolo", "classify"],
        help="decoder for the model's outputs",
    )
    parser.add_argument(
        "--source",
        default="file",
        choices=["file", "replay"],
        help="file: decode the clip flat-out (default); replay: decoded frames at 1.5x raw rate",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def _print_human(result: dict[str, Any]) -> None:
    raw, pipe = result["raw"], result["pipeline"]
    runtime = result["runtime"]
    print(f"model    {result['model']}")
    print(f"runtime  {runtime['name']} {runtime['version']}, {result['threads']} thread(s)")
    print(
        f"raw      {raw['ips']:8.1f} inferences/s  "
        f"invoke p50 {raw['latency_ms']['p50']:.3f} ms  p95 {raw['latency_ms']['p95']:.3f} ms"
    )
    print(
        f"pipeline {pipe['ips']:8.1f} inferences/s  "
        f"capture->event p50 {pipe['latency_ms']['p50']:.3f} ms  "
        f"p95 {pipe['latency_ms']['p95']:.3f} ms  (source {pipe['capture_fps']:.0f} fps)"
    )
    print(f"ratio    {result['ratio']:.3f}   rss {result['rss_mb']:.1f} MB")


def run(args: argparse.Namespace) -> int:
    # A short command: no logger caching, so in-process callers (tests) keep their log capture.
    log.configure(level=getattr(args, "log_level", None) or "warning", cache_loggers=False)
    settings = BenchSettings(
        model=find_sample(args.model, SAMPLE_MODEL),
        clip=find_sample(args.clip, SAMPLE_CLIP),
        seconds=args.seconds,
        threads=args.threads,
        backend=args.backend,
        decoder=args.decoder,
        source=args.source,
    )
    result = run_bench(settings)
    if args.json:
        print_json(result)
    else:
        _print_human(result)
    return 0

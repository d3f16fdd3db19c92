"""``edge-agent bench``: raw invoke loop and full pipeline on the same model and threads."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from agent import log
from agent.cli.common import print_json
from agent.cli.demo import SAMPLE_CLIP, SAMPLE_MODEL, find_sample

# Bundled models whose file leaves the input size dynamic: the size they were trained at
# (width, height). PaddleOCR's text-direction classifier takes 3x48x192 text lines.
SAMPLE_INPUT_SIZES = {"ch_ppocr_mobile_v2.0_cls_infer.onnx": (192, 48)}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="raw invoke loop vs full pipeline on one model",
        description="Measure the raw invoke loop and the full pipeline (file source flat-out).",
    )
    parser.add_argument("--model", type=Path, default=None, help="model file (default: sample)")
    parser.add_argument("--clip", type=Path, default=None, help="video file (default: sample)")
    parser.add_argument("--seconds", type=float, default=10.0, help="total run time, split in two")
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="interpreter threads (default: cores - 1, leaving one for capture and the rest)",
    )
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
    parser.add_argument(
        "--input-size",
        type=parse_size,
        default=None,
        metavar="WxH",
        help="input size of a dynamic-size model (default: a bundled model's own, else 640x640)",
    )
    parser.add_argument(
        "--providers",
        default="",
        help="ONNX Runtime providers, comma-separated (tensorrt,cuda,auto); default CPU",
    )
    parser.add_argument(
        "--no-overlap",
        action="store_true",
        help="run every pipeline stage in the inference thread (overlap_stages = false)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def default_threads() -> int:
    # XNNPACK's threads all wait for the slowest; one preempted by capture or decoding
    # stalls the whole invoke, so leave a core for the rest of the pipeline.
    return max(1, (os.cpu_count() or 2) - 1)


def parse_size(text: str) -> tuple[int, int]:
    """ "192x48" -> (192, 48), width first."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or "0" in (width, height):
        msg = f"expected WIDTHxHEIGHT in pixels, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(width), int(height)


def _print_human(result: dict[str, Any]) -> None:
    raw, pipe = result["raw"], result["pipeline"]
    runtime = result["runtime"]
    print(f"model    {result['model']}  input {result['input_shape']}")
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
    # Imported here: registering the command must not load OpenCV and the pipeline.
    from agent.pipeline.bench import BenchSettings, run_bench  # noqa: PLC0415 - heavy, bench only

    model = find_sample(args.model, SAMPLE_MODEL)
    settings = BenchSettings(
        model=model,
        clip=find_sample(args.clip, SAMPLE_CLIP),
        seconds=args.seconds,
        threads=args.threads,
        backend=args.backend,
        decoder=args.decoder,
        source=args.source,
        input_size=args.input_size or SAMPLE_INPUT_SIZES.get(model.name),
        providers=tuple(p.strip() for p in args.providers.split(",") if p.strip()),
        overlap_stages=not args.no_overlap,
    )
    result = run_bench(settings)
    if args.json:
        print_json(result)
    else:
        _print_human(result)
    return 0

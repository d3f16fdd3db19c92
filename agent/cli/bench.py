"""``edge-agent bench``: raw invoke loop and full pipeline on the same model and threads."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from agent import log
from agent.cli.common import print_json
from agent.cli.demo import SAMPLE_CLIP, SAMPLE_MODEL, find_sample
from agent.cli.slot import add_config_options, configured_model, model_entry
from agent.config.model import ModelConfig
from agent.inference.metadata import backend_of

# Bundled models whose file leaves the input size dynamic: the size they were trained at
# (width, height). PaddleOCR's text-direction classifier takes 3x48x192 text lines.
SAMPLE_INPUT_SIZES = {"ch_ppocr_mobile_v2.0_cls_infer.onnx": (192, 48)}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="raw invoke loop vs full pipeline on one model",
        description=(
            "Measure the raw invoke loop and the full pipeline, fed faster than the model."
        ),
    )
    parser.add_argument("--model", type=Path, default=None, help="model file (default: sample)")
    add_config_options(parser)
    parser.add_argument("--clip", type=Path, default=None, help="video file (default: sample)")
    parser.add_argument("--seconds", type=float, default=10.0, help="total run time, split in two")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="interpreter threads (default: the config's, else cores - 1, leaving one for "
        "capture and the rest)",
    )
    parser.add_argument(
        "--backend",
        default=None,
        help="tflite, onnx or tensorrt (default: the config's, else the file's magic bytes)",
    )
    parser.add_argument(
        "--decoder",
        default=None,
        choices=["blazeface", "ssd_postprocess", "yolo", "classify"],
        help="decoder for the model's outputs (default: the config's, else blazeface)",
    )
    parser.add_argument(
        "--source",
        default="replay",
        choices=["file", "replay"],
        help=(
            "replay: the clip's frames decoded once, replayed at 1.5x the raw rate (default: "
            "the pipeline's own cost); file: decode the clip flat-out on the same cores"
        ),
    )
    parser.add_argument(
        "--fps",
        type=positive_fps,
        default=None,
        help=(
            "replay at this many frames/s instead (a camera slower than the model: the CPU "
            "per frame at camera rate; the ratio is then the camera's share of the model)"
        ),
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
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="raw and pipeline rounds, alternating (at least this many of each; default 5)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(func=run)


def default_threads() -> int:
    # XNNPACK's threads all wait for the slowest; one preempted by capture or decoding
    # stalls the whole invoke, so leave a core for the rest of the pipeline.
    return max(1, (os.cpu_count() or 2) - 1)


def positive_fps(text: str) -> float:
    try:
        fps = float(text)
    except ValueError:
        fps = 0.0
    if not 0.0 < fps < float("inf"):
        msg = f"expected frames per second above 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return fps


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
        f"p95 {pipe['latency_ms']['p95']:.3f} ms  "
        f"({result['source']} source {pipe['capture_fps']:.0f} fps)"
    )
    print(
        f"ratio    {result['ratio']:.3f}  median of {result['rounds']} rounds "
        f"{result['ratio_median']:.3f} (spread {result['ratio_spread']:.3f})  "
        f"rss {result['rss_mb']:.1f} MB"
        + ("  (at --fps: the camera's share of the model)" if result.get("replay_fps") else "")
    )
    cpu, decode = result["overhead_cpu_us_per_frame"], result["capture_decode_ms"]
    print(
        f"overhead {cpu['p50']:8.1f} us CPU/frame p50  {cpu['p95']:.1f} us p95 (outside invoke)"
        f"  capture p50 {decode['p50']:.3f} ms CPU/frame"
    )


def run(args: argparse.Namespace) -> int:
    # A short command: no logger caching, so in-process callers (tests) keep their log capture.
    log.configure(level=getattr(args, "log_level", None) or "warning", cache_loggers=False)
    # Imported here: registering the command must not load OpenCV and the pipeline.
    from agent.pipeline.bench import BenchSettings, run_bench  # noqa: PLC0415 - heavy, bench only

    if args.fps is not None and args.source != "replay":
        sys.stderr.write(
            "edge-agent bench: error: --fps is the replay rate; not with --source file\n"
        )
        return 2
    configured = configured_model(args.config, args.slot) if args.config else None
    if configured is not None:
        model = find_sample(Path(configured.path), SAMPLE_MODEL)
    else:
        model = find_sample(args.model, SAMPLE_MODEL)
    given = ModelConfig() if configured is None else configured
    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    config_size = (given.input_size[0], given.input_size[1]) if given.input_size else None
    settings = BenchSettings(
        model=model,
        clip=find_sample(args.clip, SAMPLE_CLIP),
        seconds=args.seconds,
        threads=args.threads or given.threads or default_threads(),
        # An .onnx file must not reach the TFLite runtime: the file says what it is.
        backend=args.backend or given.backend or backend_of(model) or "tflite",
        decoder=args.decoder or given.decoder,
        source=args.source,
        replay_fps=args.fps,
        input_size=args.input_size or config_size or SAMPLE_INPUT_SIZES.get(model.name),
        providers=providers or tuple(given.onnx_providers),
        overlap_stages=not args.no_overlap and given.overlap_stages,
        rounds=max(1, args.rounds),
        model_settings={} if configured is None else model_entry(configured),
    )
    result = run_bench(settings)
    if args.json:
        print_json(result)
    else:
        _print_human(result)
    return 0

"""``edge-agent model inspect PATH [--json | --toml]``: what a model file is and how to run it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent import log
from agent.cli.common import print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "model",
        help="inspect a model file (backend, tensors, metadata, a ready [[models]] block)",
        description="Model file tools.",
    )
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    inspect = actions.add_parser(
        "inspect",
        help="backend, inputs/outputs, metadata, the decoder that fits; exit 1: not a model",
        description=(
            "Read a TFLite, ONNX or TensorRT file: backend from its magic bytes, tensors "
            "with dtype, shape and quantisation, metadata, the decoder family that fits "
            "and a [[models]] block with the settings inferred from the file."
        ),
    )
    inspect.add_argument("path", type=Path, help="model file")
    output = inspect.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the whole report as one JSON object")
    output.add_argument("--toml", action="store_true", help="only the [[models]] block")
    inspect.set_defaults(func=run_inspect)


def _tensor_line(tensor: dict[str, Any]) -> str:
    quant = tensor["quantization"]
    text = f"  {tensor['name']}: {tensor['dtype']} {tensor['shape']}"
    if quant:
        text += f"  quantised scale={quant['scale']:.6g} zero_point={quant['zero_point']}"
    return text


def _print_human(report: dict[str, Any]) -> None:
    runtime = report["runtime"]
    print(f"model    {report['path']} ({report['size_bytes']} bytes)")
    print(f"backend  {report['backend']} (magic bytes); {runtime['name']} {runtime['version']}")
    print(f"inputs   (layout {report['inputs'][0]['layout']})")
    for tensor in report["inputs"]:
        print(_tensor_line(tensor))
    print("outputs")
    for tensor in report["outputs"]:
        print(_tensor_line(tensor))
    metadata = report["metadata"]
    print("metadata " + (", ".join(sorted(metadata)) if metadata else "none found"))
    labels = report["labels"]
    if labels["count"]:
        print(f"labels   {labels['count']} from {labels['source']}")
    fits = report["fits"]
    print("decoder  " + (", ".join(fits) if fits else "none fits"))
    for name, problem in report["problems"].items():
        print(f"  not {name}: {problem}")
    print()
    sys.stdout.write(report["toml"])


def run_inspect(args: argparse.Namespace) -> int:
    log.configure(level=getattr(args, "log_level", None) or "warning", cache_loggers=False)
    # Imported here: registering the command must not import the inference stack.
    from agent.inference.inspection import inspect_model  # noqa: PLC0415 - model command only

    report = inspect_model(args.path)
    if args.json:
        print_json(report)
    elif args.toml:
        sys.stdout.write(report["toml"])
    else:
        _print_human(report)
    sys.stdout.flush()
    return 0

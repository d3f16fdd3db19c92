"""``model inspect``: what a model file is, what it says about itself, and how to configure it.

``inspect_model`` loads the file with the backend its magic bytes name and builds
the report from the same pieces the loader uses (``model_hints``, ``plan_input``,
``fit.fitting_families``), so the ``[[models]]`` block it suggests runs the model
exactly as the report describes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from agent.config.model import ModelConfig
from agent.errors import ModelLoadError
from agent.inference.adapt import IMAGENET_MEAN, IMAGENET_STD, RANGE_AFFINES, Affine, plan_input
from agent.inference.base import Backend, TensorSpec
from agent.inference.decoders.classify import PROBABILITY_SUM_TOLERANCE, output_kind
from agent.inference.decoders.fit import PROBLEMS, fitting_families
from agent.inference.metadata import backend_of, model_hints
from agent.inference.registry import BackendOptions, create_backend

CLOSE = 1e-4
_SLOT_CHARS = re.compile(r"[^a-z0-9_-]+")
# Suggested thresholds per family: a score the reference pipelines report at.
THRESHOLDS = {"blazeface": 0.5, "ssd_postprocess": 0.5, "yolo": 0.25, "classify": 0.1}
# YOLO exports leave NMS to the caller; 0.45 is YOLOv5's and most wrappers' IoU.
NMS_IOU = {"yolo": 0.45}


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "dtype": str(spec.dtype),
        "shape": list(spec.shape),
        "quantization": (
            {"scale": spec.scale, "zero_point": spec.zero_point} if spec.scale else None
        ),
    }


def _close(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(abs(x - y) < CLOSE for x, y in zip(a, b, strict=True))


def affine_settings(affine: Affine | None) -> dict[str, Any]:
    """The config keys that give ``affine``: a named input_range when one matches, else mean/std."""
    if affine is None:
        return {}
    for name, (scale, offset) in RANGE_AFFINES.items():
        if _close(affine.scale, (scale,) * 3) and _close(affine.offset, (offset,) * 3):
            return {"input_range": name}
    imagenet = Affine.from_mean_std(IMAGENET_MEAN, IMAGENET_STD, 1.0 / 255.0)
    if _close(affine.scale, imagenet.scale) and _close(affine.offset, imagenet.offset):
        return {"input_range": "imagenet"}
    std = [round(1.0 / (255.0 * s), 6) for s in affine.scale]
    mean = [round(-o * d, 6) for o, d in zip(affine.offset, std, strict=True)]
    return {"mean": mean, "std": std}


def slot_name(path: Path) -> str:
    name = _SLOT_CHARS.sub("_", path.stem.lower()).strip("_-")[:32]
    return name or "model"


def _toml_value(value: Any) -> str:
    # JSON spells strings, numbers, booleans and flat lists the way TOML does.
    return json.dumps(value)


def toml_block(settings: dict[str, Any], notes: dict[str, str]) -> str:
    lines = ["[[models]]"]
    for key, value in settings.items():
        if value is None:  # no decoder fits: leave the key for the user, say why
            lines.append(f"# {key} = ?  # {notes.get(key, '')}")
            continue
        note = notes.get(key)
        lines.append(f"{key} = {_toml_value(value)}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"


def _settings(
    path: Path, backend_name: str, backend: Backend, decoder: str | None
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(settings, notes per key, facts) for the suggested ``[[models]]`` block."""
    hints = model_hints(backend_name, path, backend)
    family = decoder or "classify"
    base = ModelConfig(path=str(path), decoder=family)
    plan = plan_input(base, backend.input_spec, hints)
    settings: dict[str, Any] = {
        "slot": slot_name(path),
        "path": str(path.resolve()),
        "backend": backend_name,
        "decoder": decoder,
        "resize_mode": plan.resize_mode,
        "color_order": plan.color_order,
    }
    notes = {
        "backend": "from the file's magic bytes",
        "decoder": (
            "the decoder family the outputs fit"
            if decoder
            else "no decoder family fits these outputs (see model inspect)"
        ),
        "resize_mode": plan.sources["resize_mode"],
        "color_order": "not recorded in model files; rgb unless its docs say bgr",
    }
    facts = {
        "metadata": hints.metadata,
        "labels": {"count": len(hints.labels), "source": hints.labels_source or None},
        "sources": plan.sources,
    }
    if decoder is None:
        # Input settings depend on the decoder family: none to suggest for none.
        return {k: settings[k] for k in ("slot", "path", "backend", "decoder")}, notes, facts
    norm = affine_settings(plan.affine)
    settings |= norm
    for key in norm:
        notes[key] = plan.sources["normalisation"]
    if getattr(backend, "dynamic_input", False):
        spec = backend.input_spec
        settings["input_size"] = [spec.width, spec.height]
        notes["input_size"] = "imgsz in metadata" if hints.input_size else "dynamic: set to taste"
    if decoder == "classify":
        settings["output"], notes["output"] = _classify_output(backend)
    settings["threshold"] = THRESHOLDS[decoder]
    if decoder in NMS_IOU:
        settings["nms_iou"] = NMS_IOU[decoder]
        notes["nms_iou"] = "YOLO post-processing's usual IoU (the export has no NMS)"
    return settings, notes, facts


def _classify_output(backend: Backend) -> tuple[str, str]:
    """("probabilities" | "logits", why): the quantisation says it, else one test run does."""
    spec = backend.output_specs[0]
    if output_kind(spec, "auto") == "probabilities":
        return "probabilities", "quantised softmax output (scale 1/256)"
    if not np.issubdtype(spec.dtype, np.floating):
        return "logits", "integer output without the softmax quantisation"
    scores = np.asarray(backend.infer(backend.input_buffer())[0], np.float64).reshape(-1)
    if scores.min() >= 0 and abs(scores.sum() - 1.0) <= PROBABILITY_SUM_TOLERANCE:
        return "probabilities", "sums to 1 on a test run: the model ends in softmax"
    return "logits", "does not sum to 1 on a test run: softmax is applied"


def inspect_model(path: Path, options: BackendOptions | None = None) -> dict[str, Any]:
    """The report for ``path``; raises ModelLoadError when it is not a model file."""
    backend_name = backend_of(path)
    if backend_name is None:
        raise ModelLoadError(
            f"{path}: not a TFLite, ONNX or TensorRT model (magic bytes and suffix)",
            model=str(path),
        )
    backend = create_backend(backend_name, path, options or BackendOptions(threads=1))
    try:
        if getattr(backend, "dynamic_input", False):
            hints = model_hints(backend_name, path, backend)
            if hints.input_size is not None:
                width, height = hints.input_size
                backend.close()
                backend = create_backend(
                    backend_name, path, BackendOptions(threads=1, input_size=(height, width))
                )
        spec = backend.input_spec
        fits = fitting_families(spec, backend.output_specs)
        settings, notes, facts = _settings(path, backend_name, backend, fits[0] if fits else None)
        problems = {
            name: PROBLEMS[name](spec, backend.output_specs)
            for name in PROBLEMS
            if name not in fits
        }
        runtime = backend.runtime
        return {
            "path": str(path),
            "backend": backend_name,
            "runtime": {"name": runtime.name, "version": runtime.version},
            "size_bytes": path.stat().st_size,
            "inputs": [{**_tensor(spec.tensor), "layout": spec.layout}],
            "outputs": [_tensor(s) for s in backend.output_specs],
            "decoder": fits[0] if fits else None,
            "fits": fits,
            "problems": problems,
            "settings": settings,
            "toml": toml_block(settings, notes),
            **facts,
        }
    finally:
        backend.close()

"""Running a model as a user would after `model inspect`, and comparing with a reference."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from agent.assets import find_asset
from agent.config import load_config
from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.events.filters import apply_thresholds
from agent.events.types import Detection
from agent.inference.inspection import inspect_model
from agent.pipeline.model import LoadedModel, backend_options, load_model, resolve_backend

IOU_MIN = 0.85
SCORE_TOL = 0.05


def asset(relative: str) -> Path:
    path = find_asset(relative)
    if path is None:
        raise AssertionError(f"{relative} missing: run `python tools/fetch_assets.py` (make setup)")
    return path


def photo(name: str) -> np.ndarray:
    image = cv2.imread(str(asset(f"images/{name}")), cv2.IMREAD_COLOR)
    assert image is not None, name
    return image


def wide_frame() -> np.ndarray:
    """A 1280x512 frame (2.5:1): the astronaut beside the coffee photo, as a wide camera sees."""
    coffee = photo("coffee.png")
    coffee = cv2.resize(coffee, (768, 512))
    return np.hstack([photo("astronaut.png"), coffee])


def reference_module(name: str) -> ModuleType:
    """A package's own code, unpacked from its wheel by tools/fetch_assets.py into reference/."""
    path = asset(f"reference/{name}.py")
    spec = importlib.util.spec_from_file_location(f"reference_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inspected(model_path: Path, tmp_path: Path, **overrides: object) -> tuple[ModelConfig, str]:
    """The [[models]] block `model inspect --toml` suggests, read by the project's loader."""
    block = inspect_model(model_path)["toml"]
    lines = block.splitlines()
    for key, value in overrides.items():
        line = f"{key} = {json.dumps(value)}  # set by hand (the model's documentation)"
        at = [i for i, old in enumerate(lines) if old.startswith(f"{key} = ")]
        if at:
            lines[at[0]] = line
        else:
            lines.append(line)
    config_file = tmp_path / "agent.toml"
    config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(config_file).config.models[0], block


@dataclass
class Slot:
    loaded: LoadedModel
    model: ModelConfig

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """One frame through the slot's preprocessor, backend and decoder, then thresholds."""
        buffer = self.loaded.backend.input_buffer()
        transform = self.loaded.preprocessor.prepare(frame, buffer)
        detections = self.loaded.decoder(self.loaded.backend.infer(buffer), transform)
        return apply_thresholds(detections, self.model.threshold, self.model.label_thresholds)

    def close(self) -> None:
        self.loaded.close()


def open_slot(model: ModelConfig) -> Slot:
    config = AgentConfig.model_validate({"models": [model.model_dump()]})
    path = Path(model.path)
    options = backend_options(config, config.models[0], path)
    loaded = load_model(config.models[0], resolve_backend(config, model, path), path, options)
    return Slot(loaded, config.models[0])


def iou(a: tuple[float, ...] | list[float], b: tuple[float, ...] | list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Comparison:
    pairs: list[tuple[str, float, float, float]]  # label, reference score, our score, IoU
    missed: list[tuple[str, float]]  # reference detections we do not report
    invented: list[tuple[str, float]]  # our detections the reference does not report

    @property
    def worst_iou(self) -> float:
        return min((p[3] for p in self.pairs), default=1.0)

    @property
    def worst_score_delta(self) -> float:
        return max((abs(p[1] - p[2]) for p in self.pairs), default=0.0)

    def assert_within(self, iou_min: float = IOU_MIN, score_tol: float = SCORE_TOL) -> None:
        assert self.pairs, "nothing to compare: neither side detected anything"
        assert not self.missed, f"missed reference detections {self.missed}"
        assert not self.invented, f"detections the reference does not make {self.invented}"
        assert self.worst_iou >= iou_min, self.pairs
        assert self.worst_score_delta <= score_tol, self.pairs


def compare(
    ours: list[Detection],
    reference: list[tuple[str, list[float], float]],
    threshold: float,
    margin: float = SCORE_TOL,
) -> Comparison:
    """Greedy best-IoU matching by label; detections within ``margin`` of the threshold on one
    side may be absent on the other (a score difference within tolerance moves them across).
    """
    pairs: list[tuple[str, float, float, float]] = []
    free = list(ours)
    missed: list[tuple[str, float]] = []
    for label, box, score in sorted(reference, key=lambda r: -r[2]):
        candidates = [(iou(box, d.box), d) for d in free if d.label == label]
        best = max(candidates, key=lambda c: c[0], default=None)
        if best is not None and best[0] > 0.3:
            free.remove(best[1])
            pairs.append((label, round(score, 4), round(best[1].score, 4), round(best[0], 4)))
        elif score >= threshold + margin:
            missed.append((label, round(score, 4)))
    invented = [(d.label, round(d.score, 4)) for d in free if d.score >= threshold + margin]
    return Comparison(pairs, missed, invented)

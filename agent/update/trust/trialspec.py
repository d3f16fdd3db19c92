"""The manifest's ``trial`` section: signed golden cases and shadow-trial thresholds.

Pure, strict and bounded: a golden case names an image that is one of the signed
``files`` (so its hash is checked like the model's), the results the model must give
on it and the tolerances; ``shadow`` sets what the candidate must reach against the
serving model on live frames. Unknown keys are refused, so a typo cannot silently
weaken a check. Signed JSON carries no floats (canonical form), so shares are integer
per-mille (``*_permille``, 0..1000) and boxes whole pixels; parsed values are floats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_GOLDEN_CASES = 8
MAX_EXPECTED = 32  # detections per case
MAX_GOLDEN_BYTES = 8 * 1024 * 1024  # one image file
MAX_LABEL_CHARS = 64
MAX_SHADOW_FRAMES = 10_000
MAX_SHADOW_S = 3600
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TRIAL_KEYS = frozenset({"golden", "shadow"})
_CASE_KEYS = frozenset({"name", "file", "expect", "iou_min_permille", "score_tol_permille"})
_EXPECT_KEYS = frozenset({"detections", "top_label", "score_permille"})
_DET_KEYS = frozenset({"label", "score_permille", "box"})
_SHADOW_KEYS = frozenset(
    {
        "min_agreement_permille",
        "max_rate_change_permille",
        "min_frames",
        "iou_min_permille",
        "max_s",
    }
)
MAX_BOX_PX = 1_000_000


@dataclass(frozen=True, slots=True)
class ExpectedDetection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the golden image


@dataclass(frozen=True, slots=True)
class GoldenCase:
    name: str
    file: str
    # Exactly one of the two: every detection (an empty tuple: none at all), or the top label.
    detections: tuple[ExpectedDetection, ...] | None = None
    top_label: str | None = None
    top_score: float | None = None  # with top_label: also the score, within score_tol
    iou_min: float = 0.5
    score_tol: float = 0.1


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    min_agreement: float
    max_rate_change: float | None = None
    min_frames: int = 20
    iou_min: float = 0.5
    # Longest the shadow may take to compare min_frames frames; fewer by then fails.
    max_s: int = 300


@dataclass(frozen=True, slots=True)
class TrialSpec:
    golden: tuple[GoldenCase, ...] = ()
    shadow: ShadowSpec | None = None


def _obj(value: Any, where: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be an object")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ValueError(f"{where} has unknown fields {unknown}")
    return value


def _permille(value: Any, where: str, low: int = 0) -> float:
    """An integer share in per-mille, as a float 0..1."""
    return _int(value, where, low, 1000) / 1000.0


def _int(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where} must be an integer within {low}..{high}")
    return value


def _label(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_LABEL_CHARS:
        raise ValueError(f"{where} must be a string of 1..{MAX_LABEL_CHARS} characters")
    return value


def _detection(raw: Any, where: str) -> ExpectedDetection:
    doc = _obj(raw, where, _DET_KEYS)
    box = doc.get("box")
    if not isinstance(box, list) or len(box) != 4:
        raise ValueError(f"{where}.box must be [x1, y1, x2, y2]")
    x1, y1, x2, y2 = (float(_int(v, f"{where}.box[]", -MAX_BOX_PX, MAX_BOX_PX)) for v in box)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{where}.box has x2 < x1 or y2 < y1")
    return ExpectedDetection(
        label=_label(doc.get("label"), f"{where}.label"),
        score=_permille(doc.get("score_permille"), f"{where}.score_permille"),
        box=(x1, y1, x2, y2),
    )


def _case(raw: Any, where: str, files: dict[str, int], model_file: str) -> GoldenCase:
    doc = _obj(raw, where, _CASE_KEYS)
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{where}.name is missing or malformed")
    file = doc.get("file")
    if not isinstance(file, str) or file not in files or file == model_file:
        raise ValueError(f"{where}.file must name one of the signed files (not the model)")
    if files[file] > MAX_GOLDEN_BYTES:
        raise ValueError(f"{where}.file is over {MAX_GOLDEN_BYTES} bytes")
    expect = _obj(doc.get("expect"), f"{where}.expect", _EXPECT_KEYS)
    if ("detections" in expect) == ("top_label" in expect):
        raise ValueError(f"{where}.expect needs exactly one of detections, top_label")
    detections: tuple[ExpectedDetection, ...] | None = None
    top_label: str | None = None
    top_score: float | None = None
    if "detections" in expect:
        raw_dets = expect["detections"]
        if not isinstance(raw_dets, list) or len(raw_dets) > MAX_EXPECTED:
            raise ValueError(f"{where}.expect.detections must list at most {MAX_EXPECTED}")
        if "score_permille" in expect:
            raise ValueError(f"{where}.expect.score_permille goes with top_label only")
        detections = tuple(
            _detection(d, f"{where}.expect.detections[{i}]") for i, d in enumerate(raw_dets)
        )
    else:
        top_label = _label(expect["top_label"], f"{where}.expect.top_label")
        if "score_permille" in expect:
            top_score = _permille(expect["score_permille"], f"{where}.expect.score_permille")
    return GoldenCase(
        name=name,
        file=file,
        detections=detections,
        top_label=top_label,
        top_score=top_score,
        iou_min=_permille(doc.get("iou_min_permille", 500), f"{where}.iou_min_permille", 1),
        score_tol=_permille(doc.get("score_tol_permille", 100), f"{where}.score_tol_permille"),
    )


def _shadow(raw: Any) -> ShadowSpec | None:
    if raw is None:
        return None
    doc = _obj(raw, "trial.shadow", _SHADOW_KEYS)
    if "min_agreement_permille" not in doc:
        raise ValueError("trial.shadow.min_agreement_permille is required")
    rate = doc.get("max_rate_change_permille")
    where = "trial.shadow."
    return ShadowSpec(
        min_agreement=_permille(doc["min_agreement_permille"], where + "min_agreement_permille"),
        max_rate_change=(
            None if rate is None else _permille(rate, where + "max_rate_change_permille")
        ),
        min_frames=_int(doc.get("min_frames", 20), where + "min_frames", 1, MAX_SHADOW_FRAMES),
        iou_min=_permille(doc.get("iou_min_permille", 500), where + "iou_min_permille", 1),
        max_s=_int(doc.get("max_s", 300), "trial.shadow.max_s", 1, MAX_SHADOW_S),
    )


def parse_trial(raw: Any, files: dict[str, int], model_file: str) -> TrialSpec:
    """The ``trial`` object; ``files`` maps each signed file name to its length.

    Raises ValueError/TypeError (the manifest parser turns them into ``malformed``).
    """
    if raw is None:
        return TrialSpec()
    doc = _obj(raw, "trial", _TRIAL_KEYS)
    raw_cases = doc.get("golden", [])
    if not isinstance(raw_cases, list) or len(raw_cases) > MAX_GOLDEN_CASES:
        raise ValueError(f"trial.golden must list at most {MAX_GOLDEN_CASES} cases")
    cases = tuple(
        _case(c, f"trial.golden[{i}]", files, model_file) for i, c in enumerate(raw_cases)
    )
    if len({c.name for c in cases}) != len(cases):
        raise ValueError("trial.golden names a case twice")
    return TrialSpec(golden=cases, shadow=_shadow(doc.get("shadow")))

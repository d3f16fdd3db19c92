"""The manifest's ``trial`` section: golden cases and shadow thresholds, parsed strictly."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from agent.errors import Reason, VerificationError
from agent.fleet.bundle import BundleSpec, manifest_document
from agent.update.trust.envelope import canonical_bytes
from agent.update.trust.manifest import parse_manifest
from agent.update.trust.trialspec import (
    MAX_EXPECTED,
    MAX_GOLDEN_BYTES,
    MAX_GOLDEN_CASES,
    ExpectedDetection,
    GoldenCase,
    ShadowSpec,
    TrialSpec,
)

CASE: dict[str, Any] = {
    "name": "astronaut",
    "file": "astronaut.png",
    "iou_min_permille": 600,
    "score_tol_permille": 50,
    "expect": {
        "detections": [{"label": "face", "score_permille": 921, "box": [179, 81, 272, 174]}]
    },
}


def _doc(model: Path, trial: Any, image_length: int = 1000) -> dict[str, Any]:
    spec = BundleSpec(model=model, slot="detector", fleet="f1", manifest_version=1, release=1)
    doc = manifest_document(spec, 1, 1_700_000_000.0, b"{}")
    for name in ("astronaut.png", "coffee.png"):
        doc["files"].append({"name": name, "length": image_length, "sha256": "ab" * 32})
    if trial is not None:
        doc["trial"] = trial
    return doc


def parse(model: Path, trial: Any, **kw: Any) -> TrialSpec:
    return parse_manifest(canonical_bytes(_doc(model, trial, **kw))).trial


def test_no_trial_section_means_no_checks(short_range_model: Path) -> None:
    assert parse(short_range_model, None) == TrialSpec()


def test_golden_cases_and_shadow_parse(short_range_model: Path) -> None:
    classifier = {"name": "cup", "file": "coffee.png", "expect": {"top_label": "cup"}}
    trial = parse(
        short_range_model,
        {
            "golden": [CASE, classifier],
            "shadow": {"min_agreement_permille": 900, "max_rate_change_permille": 250},
        },
    )
    assert trial.golden == (
        GoldenCase(
            name="astronaut",
            file="astronaut.png",
            detections=(ExpectedDetection("face", 0.921, (179.0, 81.0, 272.0, 174.0)),),
            iou_min=0.6,
            score_tol=0.05,
        ),
        GoldenCase(name="cup", file="coffee.png", top_label="cup"),
    )
    assert trial.shadow == ShadowSpec(min_agreement=0.9, max_rate_change=0.25)
    empty = {**CASE, "expect": {"detections": []}}
    assert parse(short_range_model, {"golden": [empty]}).golden[0].detections == ()


def _bad(case: dict[str, Any] | None = None, **trial: Any) -> dict[str, Any]:
    return {"golden": [case or CASE], **trial}


def _with(path: str, value: Any) -> dict[str, Any]:
    case = copy.deepcopy(CASE)
    target = case
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[key] if not key.isdigit() else target[int(key)]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return case


@pytest.mark.parametrize(
    ("trial", "why"),
    [
        ([], "trial must be an object"),
        ({"golden": [CASE], "extra": 1}, "unknown fields"),
        (_bad(_with("file", "unsigned.png")), "one of the signed files"),
        (_bad(_with("file", "face_detection_short_range.tflite")), "not the model"),
        (_bad(_with("name", "../x")), "name is missing or malformed"),
        (_bad(_with("iou_min_permille", 0)), "iou_min_permille"),
        (_bad(_with("score_tol_permille", 1001)), "score_tol_permille"),
        (_bad(_with("iou_min_permille", "500")), "iou_min_permille"),
        (_bad(_with("expect", {})), "exactly one of"),
        (_bad(_with("expect", {"detections": [], "top_label": "x"})), "exactly one of"),
        (_bad(_with("expect.score_permille", 5)), "goes with top_label only"),
        (_bad(_with("expect.detections.0.box", [1, 2, 3])), "box must be"),
        (_bad(_with("expect.detections.0.box", [10, 2, 3, 4])), "x2 < x1"),
        (_bad(_with("expect.detections.0.score_permille", -1)), "score_permille"),
        (_bad(_with("expect.detections.0.label", "")), "label"),
        (_bad(_with("expect.detections.0.extra", 1)), "unknown fields"),
        (_bad(_with("expect.detections", [CASE["expect"]["detections"][0]] * 33)), "at most"),
        ({"golden": [CASE, CASE]}, "names a case twice"),
        ({"golden": [CASE] * (MAX_GOLDEN_CASES + 1)}, "at most"),
        ({"shadow": {}}, "min_agreement_permille is required"),
        ({"shadow": {"min_agreement_permille": 900, "min_frames": 0}}, "min_frames"),
        ({"shadow": {"min_agreement_permille": 900, "max_s": 100000}}, "max_s"),
        ({"shadow": {"min_agreement_permille": 1200}}, "min_agreement_permille"),
        ({"shadow": {"min_agreement_permille": 900, "typo": 1}}, "unknown fields"),
    ],
)
def test_bad_trial_sections_are_malformed(short_range_model: Path, trial: Any, why: str) -> None:
    with pytest.raises(VerificationError) as caught:
        parse(short_range_model, trial)
    assert caught.value.reason is Reason.MALFORMED
    assert why in str(caught.value)


def test_golden_image_size_is_bounded(short_range_model: Path) -> None:
    assert MAX_EXPECTED == 32
    assert parse(short_range_model, {"golden": [CASE]}, image_length=MAX_GOLDEN_BYTES).golden
    with pytest.raises(VerificationError, match="over"):
        parse(short_range_model, {"golden": [CASE]}, image_length=MAX_GOLDEN_BYTES + 1)

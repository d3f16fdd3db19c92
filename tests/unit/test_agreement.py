"""The maths of a model trial: box matching, golden checks, shadow agreement and pacing."""

from __future__ import annotations

import pytest

from agent.events.types import Detection
from agent.update.trust.agreement import (
    MIN_DUTY,
    ShadowTally,
    adjust_duty,
    frame_agreement,
    golden_mismatch,
    iou,
    match,
    pause_after_s,
    shadow_verdict,
)
from agent.update.trust.trialspec import ExpectedDetection, GoldenCase, ShadowSpec

FACE = Detection("face", 0.9, (100.0, 100.0, 200.0, 200.0))


def det(x: float, label: str = "face", score: float = 0.9, size: float = 100.0) -> Detection:
    return Detection(label, score, (x, 100.0, x + size, 100.0 + size))


def test_iou() -> None:
    assert iou(FACE.box, FACE.box) == 1.0
    assert iou(FACE.box, (200.0, 200.0, 300.0, 300.0)) == 0.0  # touching corners
    assert iou(FACE.box, (150.0, 100.0, 250.0, 200.0)) == pytest.approx(50 / 150)
    assert iou((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)) == 0.0  # no area, no division


def test_match_is_one_to_one_same_label_best_first() -> None:
    left = [det(100), det(400)]
    right = [det(110), det(105), det(400, label="cat")]
    pairs = match(left, right, 0.5)
    # det(105) overlaps det(100) best; det(110) is left without a partner; labels must agree.
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert match(left, right, 0.99) == []


def case(*expected: ExpectedDetection, **kw: object) -> GoldenCase:
    return GoldenCase(name="door", file="door.png", detections=expected, **kw)  # type: ignore[arg-type]


def test_golden_detections_pass_within_tolerances() -> None:
    expected = ExpectedDetection("face", 0.92, (100.0, 100.0, 200.0, 200.0))
    assert golden_mismatch(case(expected), [det(105, score=0.88)]) is None
    assert golden_mismatch(case(), []) is None  # "nothing here" is a case too


@pytest.mark.parametrize(
    ("actual", "why"),
    [
        ([], "missed 1"),
        ([det(160)], "missed 1"),  # IoU 0.25 < 0.5
        ([det(100, label="cat")], "missed 1"),
        ([det(100, score=0.7)], "scores outside 0.92"),
        ([det(100), det(400)], "unexpected 1"),
    ],
)
def test_golden_detections_fail_naming_the_case(actual: list[Detection], why: str) -> None:
    expected = ExpectedDetection("face", 0.92, (100.0, 100.0, 200.0, 200.0))
    problem = golden_mismatch(case(expected), actual)
    assert problem is not None
    assert "golden case door" in problem
    assert why in problem


def test_golden_top_label() -> None:
    cup = GoldenCase(name="mug", file="m.png", top_label="cup", top_score=0.6, score_tol=0.05)
    ranked = [det(0, "plate", 0.2), det(0, "cup", 0.62)]
    assert golden_mismatch(cup, ranked) is None
    assert "top label plate" in (golden_mismatch(cup, [det(0, "plate", 0.7), *ranked]) or "")
    assert "top score 0.500" in (golden_mismatch(cup, [det(0, "cup", 0.5)]) or "")
    assert "top label nothing" in (golden_mismatch(cup, []) or "")


def test_frame_agreement() -> None:
    assert frame_agreement([], [], 0.5, top_label=False) == 1.0
    assert frame_agreement([FACE], [], 0.5, top_label=False) == 0.0
    assert frame_agreement([FACE], [det(102)], 0.5, top_label=False) == 1.0
    # One of two reference faces found, nothing invented: Dice 2*1/(2+1).
    assert frame_agreement([FACE, det(400)], [det(102)], 0.5, top_label=False) == 2 / 3
    assert frame_agreement([det(0, "cup", 0.9)], [det(0, "cup", 0.4)], 0.5, top_label=True) == 1.0
    assert frame_agreement([det(0, "cup")], [det(0, "mug")], 0.5, top_label=True) == 0.0
    assert frame_agreement([], [], 0.5, top_label=True) == 1.0
    assert frame_agreement([det(0, "cup")], [], 0.5, top_label=True) == 0.0


def test_tally_agreement_rate_change_and_figures() -> None:
    tally = ShadowTally()
    assert tally.agreement == 0.0
    assert tally.rate_change == 0.0
    for ref, cand in [([FACE], [det(101)]), ([FACE], []), ([], []), ([FACE], [det(100)])]:
        tally = tally.add(ref, cand, 0.5, top_label=False)
    assert tally.frames == 4
    assert tally.agreement == 0.75
    assert tally.rate_change == pytest.approx(1 / 3)  # 3 reference vs 2 candidate detections
    figures = tally.figures()
    assert figures["frames_compared"] == 4
    assert figures["agreement"] == 0.75
    assert figures["reference_per_frame"] == 0.75
    assert figures["candidate_per_frame"] == 0.5


def test_shadow_verdict() -> None:
    spec = ShadowSpec(min_agreement=0.8, max_rate_change=0.2, min_frames=3)
    good = ShadowTally()
    for _ in range(3):
        good = good.add([FACE], [det(101)], 0.5, top_label=False)
    assert shadow_verdict(good, spec) is None
    few = ShadowTally().add([FACE], [det(101)], 0.5, top_label=False)
    assert "fewer than min_frames 3" in (shadow_verdict(few, spec) or "")
    bad = good.add([FACE], [], 0.5, top_label=False)  # agreement 0.75
    assert "shadow agreement 0.750 < 0.8" in (shadow_verdict(bad, spec) or "")
    loose = ShadowSpec(min_agreement=0.5, max_rate_change=0.2, min_frames=3)
    assert "detection-rate change 0.250 > 0.2" in (shadow_verdict(bad, loose) or "")
    no_rate_limit = ShadowSpec(min_agreement=0.5, min_frames=3)
    assert shadow_verdict(bad, no_rate_limit) is None


def test_pacing_keeps_the_shadow_within_its_duty() -> None:
    # Busy 20 ms at a 10 % duty: 180 ms idle, so 20 of every 200 ms.
    assert pause_after_s(0.02, 0.1) == pytest.approx(0.18)
    assert pause_after_s(0.02, 1.0) == 0.0
    assert pause_after_s(0.02, 0.0) == pytest.approx(0.02 * (1 / MIN_DUTY - 1))


def test_duty_halves_while_serving_fps_is_down_more_than_ten_percent() -> None:
    assert adjust_duty(0.1, baseline_fps=15.0, serving_fps=13.6) == 0.1  # -9 %: fine
    assert adjust_duty(0.1, baseline_fps=15.0, serving_fps=13.4) == 0.05  # -11 %: back off
    assert adjust_duty(MIN_DUTY, 15.0, 1.0) == MIN_DUTY
    assert adjust_duty(0.1, baseline_fps=0.0, serving_fps=0.0) == 0.1  # nothing to protect

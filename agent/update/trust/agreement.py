"""The maths of proving a model: golden-case checks, shadow agreement, shadow pacing.

Pure. Detections are anything with ``label``, ``score`` and ``box`` (x1, y1, x2, y2),
so both the pipeline's detections and a manifest's expected ones fit.

* Boxes match one-to-one, same label, best IoU first, at ``iou_min`` or better.
* A golden case passes when every expected detection is matched (score within
  ``score_tol``) and the model reports nothing else; or, for a classifier, when the
  top label (and score, if given) is the expected one.
* A shadow frame's agreement is the Dice share of matched boxes,
  ``2·matched / (reference + candidate)``, 1.0 when both see nothing; for a
  classifier it is 1.0 when the top labels are equal. The trial's agreement is the
  mean over compared frames, and its detection-rate change is the symmetric relative
  difference of the detections per frame, ``|c - r| / max(c, r)`` (0..1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.update.trust.trialspec import GoldenCase, ShadowSpec

MAX_FPS_DROP = 0.10  # the serving model's fps may drop by at most this share
MIN_DUTY = 0.01


class Boxed(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> tuple[float, float, float, float]: ...


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(
    left: Sequence[Boxed], right: Sequence[Boxed], iou_min: float
) -> list[tuple[int, int, float]]:
    """One-to-one pairs (left index, right index, IoU), same label, greedy by best IoU."""
    candidates = sorted(
        (
            (iou(a.box, b.box), i, j)
            for i, a in enumerate(left)
            for j, b in enumerate(right)
            if a.label == b.label
        ),
        reverse=True,
    )
    used_left: set[int] = set()
    used_right: set[int] = set()
    pairs: list[tuple[int, int, float]] = []
    for overlap, i, j in candidates:
        if overlap < iou_min:
            break
        if i in used_left or j in used_right:
            continue
        used_left.add(i)
        used_right.add(j)
        pairs.append((i, j, overlap))
    return pairs


def _top(detections: Sequence[Boxed]) -> Boxed | None:
    return max(detections, key=lambda d: d.score, default=None)


def _fmt(d: Boxed) -> str:
    box = ", ".join(f"{v:.0f}" for v in d.box)
    return f"{d.label} {d.score:.2f} [{box}]"


def golden_mismatch(case: GoldenCase, actual: Sequence[Boxed]) -> str | None:
    """Why ``actual`` fails ``case`` (one line naming the case), or None when it passes."""
    if case.top_label is not None:
        top = _top(actual)
        if top is None or top.label != case.top_label:
            got = "nothing" if top is None else f"{top.label} {top.score:.2f}"
            return f"golden case {case.name}: top label {got}, expected {case.top_label}"
        if case.top_score is not None and abs(top.score - case.top_score) > case.score_tol:
            return (
                f"golden case {case.name}: top score {top.score:.3f}, expected "
                f"{case.top_score:.3f} ± {case.score_tol}"
            )
        return None
    expected = case.detections or ()
    pairs = match(expected, actual, case.iou_min)
    for i, j, _ in pairs:
        if abs(expected[i].score - actual[j].score) > case.score_tol:
            return (
                f"golden case {case.name}: {_fmt(actual[j])} scores outside "
                f"{expected[i].score:.2f} ± {case.score_tol}"
            )
    missing = [expected[i] for i in range(len(expected)) if i not in {p[0] for p in pairs}]
    extra = [actual[j] for j in range(len(actual)) if j not in {p[1] for p in pairs}]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missed {len(missing)}: {'; '.join(_fmt(d) for d in missing[:3])}")
        if extra:
            parts.append(f"unexpected {len(extra)}: {'; '.join(_fmt(d) for d in extra[:3])}")
        return f"golden case {case.name} (IoU ≥ {case.iou_min}): {', '.join(parts)}"
    return None


def frame_agreement(
    reference: Sequence[Boxed], candidate: Sequence[Boxed], iou_min: float, top_label: bool
) -> float:
    """Agreement of two models on one frame, 0..1 (see the module docstring)."""
    if top_label:
        ref, cand = _top(reference), _top(candidate)
        if ref is None or cand is None:
            return 1.0 if ref is cand else 0.0
        return 1.0 if ref.label == cand.label else 0.0
    if not reference and not candidate:
        return 1.0
    matched = len(match(reference, candidate, iou_min))
    return 2.0 * matched / (len(reference) + len(candidate))


@dataclass(frozen=True, slots=True)
class ShadowTally:
    """What the shadow has compared so far (immutable: ``add`` returns the next tally)."""

    frames: int = 0
    agreement_sum: float = 0.0
    reference_detections: int = 0
    candidate_detections: int = 0

    def add(
        self,
        reference: Sequence[Boxed],
        candidate: Sequence[Boxed],
        iou_min: float,
        top_label: bool,
    ) -> ShadowTally:
        return ShadowTally(
            frames=self.frames + 1,
            agreement_sum=self.agreement_sum
            + frame_agreement(reference, candidate, iou_min, top_label),
            reference_detections=self.reference_detections + len(reference),
            candidate_detections=self.candidate_detections + len(candidate),
        )

    @property
    def agreement(self) -> float:
        return self.agreement_sum / self.frames if self.frames else 0.0

    @property
    def rate_change(self) -> float:
        high = max(self.reference_detections, self.candidate_detections)
        return abs(self.candidate_detections - self.reference_detections) / high if high else 0.0

    def figures(self) -> dict[str, float | int]:
        frames = self.frames or 1
        return {
            "frames_compared": self.frames,
            "agreement": round(self.agreement, 4),
            "rate_change": round(self.rate_change, 4),
            "reference_per_frame": round(self.reference_detections / frames, 3),
            "candidate_per_frame": round(self.candidate_detections / frames, 3),
        }


def shadow_verdict(tally: ShadowTally, spec: ShadowSpec) -> str | None:
    """Why the shadow trial fails (one line), or None when the candidate reached the thresholds."""
    if tally.frames < spec.min_frames:
        return f"shadow compared {tally.frames} frames, fewer than min_frames {spec.min_frames}"
    if tally.agreement < spec.min_agreement:
        return (
            f"shadow agreement {tally.agreement:.3f} < {spec.min_agreement} "
            f"over {tally.frames} frames"
        )
    if spec.max_rate_change is not None and tally.rate_change > spec.max_rate_change:
        return (
            f"detection-rate change {tally.rate_change:.3f} > {spec.max_rate_change} "
            f"({tally.reference_detections} vs {tally.candidate_detections} detections "
            f"over {tally.frames} frames)"
        )
    return None


def pause_after_s(busy_s: float, duty: float) -> float:
    """Idle time after a shadow step of ``busy_s`` so the shadow is busy ``duty`` of the time."""
    return busy_s * (1.0 / max(duty, MIN_DUTY) - 1.0)


def adjust_duty(
    duty: float, baseline_fps: float, serving_fps: float, max_drop: float = MAX_FPS_DROP
) -> float:
    """Halve the shadow's share while the serving fps is down more than ``max_drop``.

    A baseline of 0 (no frames before the trial) gives nothing to protect: duty unchanged.
    """
    if baseline_fps <= 0.0 or serving_fps >= baseline_fps * (1.0 - max_drop):
        return duty
    return max(MIN_DUTY, duty / 2.0)

"""Golden cases: run the staged model on the bundle's signed images before activation.

The images were staged with the model (they are manifest ``files``, hash-checked like
it); each goes through the model as its slot runs it (``slotmodel``) and the pure
check (``trust.agreement.golden_mismatch``) decides. The first failing case is
reported by name; the active model is never touched here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError, DecoderError, Reason
from agent.log import get_logger
from agent.update.store.slotmodel import DetectorFactory, read_image
from agent.update.trust.agreement import golden_mismatch
from agent.update.trust.trialspec import GoldenCase

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class GoldenOutcome:
    ok: bool
    detail: str = ""
    reason: Reason | None = None
    passed: int = 0


def reason_of(exc: Exception, default: Reason) -> Reason:
    """The contract reason an error carries (``DecoderMismatchError``: decoder_mismatch)."""
    if isinstance(exc, DecoderError):
        return Reason.DECODER_MISMATCH
    data = exc.data if isinstance(exc, AgentError) else {}
    reason = getattr(exc, "reason", None) or data.get("reason")
    try:
        return Reason(reason) if reason is not None else default
    except ValueError:
        return default


def run_golden(
    detectors: DetectorFactory, slot: str, model_path: Path, cases: tuple[GoldenCase, ...]
) -> GoldenOutcome:
    """Every case on the model at ``model_path`` (its images sit next to it); never raises."""
    if not cases:
        return GoldenOutcome(ok=True)
    try:
        # One thread: this runs beside the serving model on a live device.
        detector = detectors.open(slot, model_path, threads=1)
    except Exception as exc:  # a runtime that refuses the file fails the gate, never crashes it
        reason = reason_of(exc, Reason.GOLDEN_MISMATCH)
        return GoldenOutcome(ok=False, detail=f"golden cases cannot run: {exc}", reason=reason)
    try:
        for passed, case in enumerate(cases):
            try:
                actual = detector.detect(read_image(model_path.parent / case.file))
            except AgentError as exc:
                reason = reason_of(exc, Reason.GOLDEN_MISMATCH)
                return GoldenOutcome(
                    ok=False, detail=f"golden case {case.name}: {exc}", reason=reason, passed=passed
                )
            except Exception as exc:  # a runtime that chokes on the input fails the case
                detail = f"golden case {case.name}: inference failed: {exc}"
                return GoldenOutcome(
                    ok=False, detail=detail, reason=Reason.GOLDEN_MISMATCH, passed=passed
                )
            problem = golden_mismatch(case, actual)
            if problem is not None:
                log.warning("golden_mismatch", slot=slot, case=case.name, detail=problem)
                return GoldenOutcome(
                    ok=False, detail=problem, reason=Reason.GOLDEN_MISMATCH, passed=passed
                )
    finally:
        detector.close()
    log.info("golden_passed", slot=slot, cases=len(cases))
    return GoldenOutcome(ok=True, detail=f"{len(cases)} golden cases passed", passed=len(cases))

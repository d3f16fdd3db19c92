"""Errors of one model slot and the slot's health verdict (pure, apart from logging).

A decoder that fails on every frame is not a per-frame warning: after
``DECODER_FAILURE_LIMIT`` consecutive failures the slot is ``down`` (the daemon
raises the ``model_<slot>_down`` alarm from health) and ``decoder_fault`` carries a
``DecoderMismatchError`` (reason ``decoder_mismatch``) for an update trial to report.
One decoded frame clears it. Only the first failure of a run and the crossing of the
limit are logged.
"""

from __future__ import annotations

from agent.errors import AgentError, DecoderError, DecoderMismatchError
from agent.log import get_logger

log = get_logger(__name__)

DECODER_FAILURE_LIMIT = 5


class SlotFaults:
    def __init__(self, slot: str, decoder: str, limit: int = DECODER_FAILURE_LIMIT) -> None:
        self._slot = slot
        self._decoder = decoder
        self._limit = limit
        self.errors = 0
        self.last_error = ""
        self.decoder_failures = 0  # consecutive
        self.decoder_fault: DecoderMismatchError | None = None

    def failed(self, exc: Exception, stage: str) -> None:
        self.errors += 1
        self.last_error = str(exc)
        if isinstance(exc, DecoderError):
            self._decoder_failed(exc)
        elif isinstance(exc, AgentError):
            log.warning("inference_failed", slot=self._slot, stage=stage, error=str(exc))
        else:
            log.error(  # exc_info: the traceback of a bug
                "inference_crashed", slot=self._slot, stage=stage, error=str(exc), exc_info=exc
            )

    def _decoder_failed(self, exc: DecoderError) -> None:
        self.decoder_failures += 1
        if self.decoder_failures == 1:
            log.warning("decoder_failed", slot=self._slot, decoder=self._decoder, error=str(exc))
        if self.decoder_failures == self._limit:
            self.decoder_fault = DecoderMismatchError(
                f"decoder {self._decoder} failed on {self._limit} consecutive frames: {exc}",
                decoder=self._decoder,
                outputs=[],
                fits=[],
            )
            log.error(
                "decoder_mismatch",
                slot=self._slot,
                decoder=self._decoder,
                frames=self._limit,
                error=str(exc),
            )

    def decoded(self) -> None:
        """A frame decoded: a run of decoder failures is over."""
        if self.decoder_failures:
            if self.decoder_fault is not None:
                log.info("decoder_recovered", slot=self._slot, after=self.decoder_failures)
            self.decoder_failures = 0
            self.decoder_fault = None

    def reset(self, decoder: str) -> None:
        """A new model is serving: its decoder starts with a clean record."""
        self._decoder = decoder
        self.decoder_failures = 0
        self.decoder_fault = None


def slot_health(
    *,
    stuck_running_s: float | None,
    serving: str | None,
    faults: SlotFaults,
    restarts: int,
) -> tuple[str, str]:
    """(status, detail) of a slot.

    ``stuck_running_s``: how long an invoke has run past its timeout (None: not stuck);
    ``serving``: "model on runtime" (None: no model loaded); ``restarts``: watchdog
    restarts in the last hour.
    """
    if stuck_running_s is not None:
        return "down", f"stuck: invoke running for {stuck_running_s:.1f} s"
    if serving is None:
        return "down", faults.last_error or "no model loaded"
    if faults.decoder_fault is not None:
        return "down", f"{faults.decoder_fault.reason.value}: {faults.decoder_fault}"
    if restarts:
        return "degraded", f"worker restarted {restarts}x in the last hour after a stuck invoke"
    if faults.errors and faults.last_error:
        return "ok", f"last error: {faults.last_error}"
    return "ok", serving

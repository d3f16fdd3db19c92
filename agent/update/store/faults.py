"""Fault injection for the crash-consistency tests: SIGKILL ourselves at a named step.

``EDGE_AGENT_UPDATE_FAULT=step[,step...]`` names the steps. Production code calls
``hit(step)`` at every point the kill matrix covers; unset, it does nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

FAULT_ENV = "EDGE_AGENT_UPDATE_FAULT"
FaultHook = Callable[[str], None]

# Every named step, in the order an install passes them (documented in docs/updates.md).
STEPS: tuple[str, ...] = (
    "verified",  # floor persisted, pending manifest journalled, nothing staged
    "stage_before_rename",  # .v-<sha>.tmp complete and fsync'd, not renamed
    "stage_after_rename",  # version dir renamed, slot dir not fsync'd yet
    "previous_link_created",
    "current_link_created",  # current.tmp-link exists, not renamed over current
    "current_renamed",  # current switched, slot dir not fsync'd yet
    "trial_start",  # attempts persisted, health check not started
    "commit_before_gc",
    "rollback_swap",  # rolling back: before current is switched back
)


def hit(step: str) -> None:
    wanted = os.environ.get(FAULT_ENV, "")
    if wanted and step in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def no_fault(step: str) -> None:
    del step

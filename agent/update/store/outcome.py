"""What an install attempt ended in, and the one translation of a full state disk."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent.errors import ActivationError, Reason

# Shadow-trial figures for the op state (frames compared, agreement, rate change, ...).
Figures = dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class InstallResult:
    slot: str
    outcome: str  # committed | rolled_back | noop | interrupted | inconsistent
    reason: Reason | None = None
    manifest_version: int = 0
    bundle_sha: str = ""
    detail: str = ""
    shadow: Figures = None

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome in ("committed", "noop") else 1


@contextlib.contextmanager
def space_guard() -> Iterator[None]:
    """A state-dir write that hits a full disk is a refusal with a reason, not a crash."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ActivationError(
            Reason.INSUFFICIENT_SPACE, f"state directory full: {exc.strerror}"
        ) from exc

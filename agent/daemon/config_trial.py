"""A remote config on trial: confirm once connected and healthy for a while, else revert.

The decision is pure (``ConfigTrial.decide``); the supervisor feeds it the link state and
the health status every tick and does the IO (``confirm_trial`` / ``revert_trial`` and a
restart, after which the last good config is loaded).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.desired import confirm_trial, revert_trial
from agent.log import get_logger

log = get_logger(__name__)


class Verdict(str, enum.Enum):
    CONFIRM = "confirm"
    REVERT = "revert"


@dataclass
class ConfigTrial:
    version: int
    started_mono_s: float
    deadline_s: float
    healthy_s: float
    healthy_since_s: float | None = None
    last_problem: str = "not connected to the broker yet"

    def decide(self, now_s: float, connected: bool, health_status: str) -> Verdict | None:
        if connected and health_status != "down":
            if self.healthy_since_s is None:
                self.healthy_since_s = now_s
            if now_s - self.healthy_since_s >= self.healthy_s:
                return Verdict.CONFIRM
        else:
            self.healthy_since_s = None
            self.last_problem = (
                "not connected to the broker" if not connected else f"health {health_status}"
            )
        if now_s - self.started_mono_s >= self.deadline_s:
            return Verdict.REVERT
        return None

    def reason(self) -> str:
        return f"not connected and healthy within {self.deadline_s:g} s ({self.last_problem})"


class TrialWatch:
    """The IO around ``ConfigTrial``: confirm or revert on disk, then ask for a restart."""

    def __init__(self, state_dir: Path, trial: ConfigTrial, restart: Callable[[], None]) -> None:
        self.state_dir = state_dir
        self.trial: ConfigTrial | None = trial
        self._restart = restart

    def tick(self, now_s: float, wall_s: float, connected: bool, health_status: str) -> None:
        trial = self.trial
        if trial is None:
            return
        verdict = trial.decide(now_s, connected, health_status)
        try:
            if verdict is Verdict.CONFIRM:
                confirm_trial(self.state_dir, trial.version)
                self.trial = None
            elif verdict is Verdict.REVERT:
                revert_trial(self.state_dir, f"config v{trial.version} {trial.reason()}", wall_s)
                self.trial = None
                self._restart()  # the last good config is loaded at the next start
        except OSError as exc:
            # A full or read-only state disk: keep the trial and try again next tick (a
            # restart now would only count against the trial without recording anything).
            log.warning("desired_config_trial_write_failed", verdict=verdict, error=str(exc))

    def status(self) -> dict[str, Any] | None:
        trial = self.trial
        if trial is None:
            return None
        return {"version": trial.version, "deadline_s": trial.deadline_s}

"""Ack pacing: how often a chunk server acknowledges batches that published nothing (pure).

Every ack goes to every device on the stream (QoS 1: a PUBACK each), so at N devices
its cost grows with N. A batch that published frames is acknowledged at once: its ack
index feeds the devices' ``too_large`` check. A batch that only skipped or held (slow
devices asking for chunks already queued to them: most batches of a large rollout) is
acknowledged at most every ``every_s``; the requests it answered are named in the next
ack of the deployment, whichever comes first. Names wait at most ``every_s``, well under
the devices' 0.3 s grace and 5 s stall timer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Name = tuple[int, int]  # (listener, seq)

EVERY_S = 0.2


@dataclass(slots=True)
class AckPace:
    every_s: float = EVERY_S
    _last_s: dict[str, float] = field(default_factory=dict)  # deployment -> last ack
    _waiting: dict[str, list[Name]] = field(default_factory=dict)

    def take(
        self, deployment: str, names: list[Name], frames: int, now_s: float
    ) -> list[Name] | None:
        """The names to acknowledge now (after this batch), or None: no ack, they wait."""
        last = self._last_s.get(deployment)
        if frames == 0 and last is not None and now_s - last < self.every_s:
            self._waiting.setdefault(deployment, []).extend(names)
            return None
        self._last_s[deployment] = now_s
        return self._waiting.pop(deployment, []) + names

    def due_s(self) -> float | None:
        """When the earliest waiting names must go out (None: none wait)."""
        dues = [self._last_s[d] + self.every_s for d in self._waiting]
        return min(dues, default=None)

    def flush(self, now_s: float) -> dict[str, list[Name]]:
        """Waiting names that are due, per deployment (their ack goes out now, index 0)."""
        due = [d for d in self._waiting if self._last_s[d] + self.every_s <= now_s]
        for deployment in due:
            self._last_s[deployment] = now_s
        return {d: self._waiting.pop(d) for d in due}

"""Capped, fully jittered exponential backoff shared by MQTT, capture and update polling."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delay for attempt n is uniform(0, min(cap, base * factor**n)) ("full jitter").

    ``reset()`` once the link has been stable; ``next_delay_s()`` per failed attempt.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def ceiling_s(self) -> float:
        # Clamp the exponent so huge attempt counts cannot overflow a float.
        return min(self.cap_s, self.base_s * self.factor ** min(self.attempt, 64))

    def next_delay_s(self) -> float:
        delay = self.rng.uniform(0.0, self.ceiling_s())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0

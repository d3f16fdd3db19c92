"""Start wait: when a deployment's first chunks may go out (a pure decision, no IO).

A server that knows which devices a publication targets holds the first chunks while
those devices are still arriving, so the first window goes out once to all of them
instead of once to the first asker and again to each later one. Arrival is measured by
progress, not by a fixed delay: the hold lasts while targeted devices keep beginning to
ask (each new one within ``quiet_s`` of the one before), and never past ``max_s`` after
the first ask, so a targeted device that is offline costs ``quiet_s`` after the last
arrival, and at most ``max_s``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

# Above the longest gap between two devices' first chunk requests measured with 200 device
# processes on 2 cores (0.47 and 0.62 s, docs/benchmarks.md; 0.3 s let 146 of 200 in late).
QUIET_S = 1.0
# Under the devices' 5 s stall timer, so no device asks again while its chunks are held.
MAX_S = 4.0


@dataclass(frozen=True, slots=True)
class StartWait:
    quiet_s: float = QUIET_S
    max_s: float = MAX_S

    def __post_init__(self) -> None:
        if self.quiet_s < 0 or self.max_s < 0:
            raise ValueError("start wait quiet_s and max_s must be >= 0")


def start_hold_until(
    expected: AbstractSet[str],
    first_asks: Mapping[str, float],
    now_s: float,
    wait: StartWait,
    *,
    shared: bool = False,
) -> float | None:
    """None: stream now. Otherwise hold the first chunks and decide again at the time returned.

    ``first_asks`` maps each device heard from so far to when its first request arrived
    (the server's monotonic clock). A server of a share group sees only its share of the
    askers, so it could never tell that all targets listen: it does not wait.
    """
    if shared or not expected or not first_asks:
        return None
    if expected <= first_asks.keys():
        return None  # every targeted device listens
    cap_s = min(first_asks.values()) + wait.max_s
    arrived = [first_asks[d] for d in expected if d in first_asks]
    # The latest targeted device to begin asking (or the first ask, if none of them has).
    latest_s = max(arrived, default=min(first_asks.values()))
    due_s = min(cap_s, latest_s + wait.quiet_s)
    return due_s if now_s < due_s else None

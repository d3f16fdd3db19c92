"""Limits on the command channel, so one request cannot cost more than it is worth.

Anyone who may publish on ``cmd/#`` can send any bytes, as often as the broker lets
them. Pure decisions here, applied by ``CommandDispatcher``:

* a request larger than ``MAX_REQUEST_BYTES`` is refused (``too_large``) before it is
  parsed; nesting deeper than ``MAX_DEPTH`` is ``malformed`` (never a crash);
* op states and the persisted history name the request by size and SHA-256, never by
  its body (the retained state and ``commands.json`` do not grow with the request);
* the history keeps at most ``HISTORY_MAX_BYTES`` of serialised states, oldest first out;
* a token bucket per sender (``sender`` field of the request, else the op) answers
  ``busy`` with ``retry_after_s`` instead of running a flood.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

MAX_REQUEST_BYTES = 64 * 1024
MAX_DEPTH = 32
HISTORY_MAX_BYTES = 256 * 1024
MAX_KEPT_RESULT_BYTES = 4 * 1024  # a larger result is published, then kept as its digest
MAX_SENDER_CHARS = 64


def request_ref(payload: bytes) -> dict[str, Any]:
    """What an op state says about the request: its size and digest, not its body."""
    return {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def nesting_depth(doc: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of lists/objects (iterative: a deep document cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def sender_of(request: dict[str, Any], op: str) -> str:
    sender = request.get("sender")
    if isinstance(sender, str) and 0 < len(sender) <= MAX_SENDER_CHARS:
        return sender
    return f"op:{op}"


def compact(state: dict[str, Any]) -> dict[str, Any]:
    """The state as kept in the history: a large result becomes its size and digest."""
    result = state.get("result")
    if result is None:
        return state
    encoded = json.dumps(result, sort_keys=True, default=str).encode("utf-8")
    if len(encoded) <= MAX_KEPT_RESULT_BYTES:
        return state
    kept = {k: v for k, v in state.items() if k != "result"}
    kept["result_ref"] = {"bytes": len(encoded), "sha256": hashlib.sha256(encoded).hexdigest()}
    return kept


def state_bytes(state: dict[str, Any]) -> int:
    return len(json.dumps(state, sort_keys=True, default=str))


@dataclass
class TokenBuckets:
    """One bucket per sender: ``rate_per_s`` refill, ``burst`` capacity; few senders kept."""

    rate_per_s: float = 5.0
    burst: float = 20.0
    max_senders: int = 256
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def take(self, sender: str, now_s: float) -> float:
        """0.0 when admitted, else seconds until a token is there."""
        tokens, last = self._buckets.pop(sender, (self.burst, now_s))
        tokens = min(self.burst, tokens + (now_s - last) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[sender] = (tokens, now_s)  # most recent last
        while len(self._buckets) > self.max_senders:
            self._buckets.pop(next(iter(self._buckets)))
        return wait

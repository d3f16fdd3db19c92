"""Root rotation over MQTT: every root version on its own retained topic, walked in order.

``edge-fleet root rotate --broker`` (and ``root publish``) retain root N on
``<root>/f/<fleet>/trust/root/<N>`` and the latest on ``trust/root`` (CONTRACT §4).
A device subscribes to both, so on every (re)subscribe the broker hands it the whole
chain; it keeps the versions above its trusted one (at most ``MAX_ROOT_HOPS`` ahead)
and walks trusted+1, +2, … as far as they are consecutive, like a TUF client
(``Installer.apply_roots`` → ``trust.root.walk``: each step needs the old and the new
root keys' thresholds). A device that missed root N+1 while offline and sees N+2 on
``trust/root`` thus still ends on N+2. Input whose version cannot be read, or whose
rotation does not verify, is dropped and counted as unverifiable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from agent.errors import Reason, UpdateError
from agent.log import get_logger
from agent.update.transfer.screen import UnverifiedInput, offered_root_version
from agent.update.trust.root import MAX_ROOT_HOPS, Root

log = get_logger(__name__)

_MAX_TOPICS = 2 * MAX_ROOT_HOPS  # messages kept between two worker steps


class RootChain:
    def __init__(
        self,
        trusted_root: Callable[[], Root],
        apply_roots: Callable[[list[bytes]], Root],
        unverified: UnverifiedInput,
    ) -> None:
        self._trusted_root = trusted_root
        self._apply_roots = apply_roots
        self._unverified = unverified
        self._lock = threading.Lock()
        self._incoming: dict[str, bytes] = {}
        self.pending: dict[int, bytes] = {}  # version → envelope, versions above trusted

    def on_message(self, topic: str, payload: bytes) -> bool:
        """Network thread: keep the newest payload per topic (bounded); True when kept."""
        if not payload:
            return False
        with self._lock:
            self._incoming.pop(topic, None)
            self._incoming[topic] = payload
            while len(self._incoming) > _MAX_TOPICS:
                self._incoming.pop(next(iter(self._incoming)))
        return True

    def apply(self) -> Root | None:
        """Worker thread: sort what came in, walk as far as the chain is consecutive."""
        with self._lock:
            incoming, self._incoming = self._incoming, {}
        if not incoming and not self.pending:
            return None
        trusted = self._trusted_root()
        for topic, data in incoming.items():
            try:
                version = offered_root_version(data)
            except UpdateError as exc:
                self._unverified.record(topic, exc.reason, exc.message)
                continue
            if trusted.version < version <= trusted.version + MAX_ROOT_HOPS:
                self.pending[version] = data  # the same version twice: the later one
        for version in [v for v in self.pending if v <= trusted.version]:
            del self.pending[version]
        chain: list[bytes] = []
        while trusted.version + len(chain) + 1 in self.pending:
            chain.append(self.pending[trusted.version + len(chain) + 1])
        if not chain:
            if self.pending:
                log.info("root_chain_gap", trusted=trusted.version, offered=sorted(self.pending))
            return None
        return self._walk(trusted, chain)

    def _walk(self, trusted: Root, chain: list[bytes]) -> Root | None:
        # The whole chain at once (only the final root must be unexpired); when a link is
        # bad, the longest good prefix, and the bad link is dropped.
        for length in range(len(chain), 0, -1):
            try:
                new = self._apply_roots(chain[:length])
            except UpdateError as exc:
                if length == 1:
                    bad = trusted.version + 1
                    self.pending.pop(bad, None)
                    self._unverified.record(f"trust/root/{bad}", exc.reason, exc.message)
                continue
            for version in range(trusted.version + 1, new.version + 1):
                self.pending.pop(version, None)
            if length < len(chain):
                bad = new.version + 1
                self.pending.pop(bad, None)
                self._unverified.record(f"trust/root/{bad}", Reason.UNSIGNED, "rotation failed")
            log.info("root_chain_walked", old=trusted.version, new=new.version)
            return new
        return None

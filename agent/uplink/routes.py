"""Topic-filter routing shared by the device link and the operator's MQTT client.

Matching every message against every filter is paho's slowest path at chunk rates, so
the callbacks per topic are cached until the subscriptions change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt

MessageCallback = Callable[[str, bytes], None]
MATCH_CACHE = 1024  # distinct topics remembered; cleared on (un)subscribe


class Routes:
    def __init__(self) -> None:
        # Reentrant so an owner can hold it around a compound change (link's pending unsubs).
        self.lock = threading.RLock()
        self._subs: dict[str, MessageCallback] = {}
        self._matches: dict[str, list[MessageCallback]] = {}

    def add(self, topic_filter: str, callback: MessageCallback) -> None:
        with self.lock:
            self._subs[topic_filter] = callback
            self._matches.clear()

    def remove(self, topic_filter: str) -> None:
        with self.lock:
            self._subs.pop(topic_filter, None)
            self._matches.clear()

    def __contains__(self, topic_filter: object) -> bool:
        with self.lock:
            return topic_filter in self._subs

    def filters(self) -> list[str]:
        with self.lock:
            return list(self._subs)

    def callbacks_for(self, topic: str) -> list[MessageCallback]:
        with self.lock:
            matches = self._matches.get(topic)
            if matches is None:
                matches = [cb for f, cb in self._subs.items() if mqtt.topic_matches_sub(f, topic)]
                if len(self._matches) >= MATCH_CACHE:
                    self._matches.clear()
                self._matches[topic] = matches
            return matches

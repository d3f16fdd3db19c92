"""Topic names of CONTRACT §4, built from the root and the device id (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    root: str
    device: str
    fleet: str = "default"

    @property
    def base(self) -> str:
        return f"{self.root}/d/{self.device}"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def stats(self) -> str:
        return f"{self.base}/m/stats"

    @property
    def detection(self) -> str:
        return f"{self.base}/e/detection"

    @property
    def detection_counts(self) -> str:
        """Per-label counts per minute that replace detections when the outbox is full."""
        return f"{self.base}/e/detection_counts"

    def alarm(self, name: str) -> str:
        return f"{self.base}/a/{name}"

    @property
    def cmd_filter(self) -> str:
        return f"{self.base}/cmd/+/+"

    def cmd(self, op: str, cmd_id: str) -> str:
        return f"{self.base}/cmd/{op}/{cmd_id}"

    def op(self, op: str, cmd_id: str) -> str:
        return f"{self.base}/op/{op}/{cmd_id}"

    def fleet_topic(self, suffix: str) -> str:
        return f"{self.root}/f/{self.fleet}/{suffix}"

    def parse_cmd(self, topic: str) -> tuple[str, str] | None:
        """``<base>/cmd/<op>/<cmd_id>`` → (op, cmd_id); None for any other shape."""
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if len(parts) != 2 or not all(parts):
            return None
        return parts[0], parts[1]


def is_valid_name(segment: str) -> bool:
    """A single topic level we are willing to publish under (alarm names, op names)."""
    return bool(segment) and not any(c in segment for c in "/#+\x00") and len(segment) <= 128

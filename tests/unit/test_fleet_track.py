"""T23: the operator side orders op states by status_version and ignores replays."""

from __future__ import annotations

import json

from agent.fleet.track import Tracker, outcome
from agent.update.transfer.wire import Topics

TOPICS = Topics("ea/v1")
DEP = "default-detector-7"


def state(status: str, version: int, reason: str | None = None) -> bytes:
    return json.dumps({"status": status, "status_version": version, "reason": reason}).encode()


def test_replayed_or_older_states_do_not_change_what_the_fleet_sees():
    tracker = Tracker(TOPICS, DEP)
    topic = TOPICS.model_update("cam-001", DEP)
    tracker.on_message(topic, state("downloading", 1))
    tracker.on_message(topic, state("failed", 4, "health_failed"))
    # A replayed earlier state (same counter) and an old "successful" (lower counter).
    tracker.on_message(topic, state("successful", 4))
    tracker.on_message(topic, state("successful", 3))
    seen = tracker.snapshot()["cam-001"]
    assert (seen.status, seen.status_version, seen.reason) == ("failed", 4, "health_failed")
    assert outcome(tracker.snapshot(), ["cam-001"]).failed == ("cam-001",)


def test_garbage_and_foreign_topics_are_ignored():
    tracker = Tracker(TOPICS, DEP)
    tracker.on_message(TOPICS.model_update("cam-001", DEP), b"{not json")
    tracker.on_message(TOPICS.model_update("cam-001", DEP), json.dumps({"status": "x"}).encode())
    tracker.on_message("ea/v1/elsewhere", state("successful", 9))
    assert tracker.snapshot() == {}
    tracker.on_message(TOPICS.model_update("cam-002", DEP), state("successful", 2))
    assert outcome(tracker.snapshot(), ["cam-001", "cam-002"]).pending == ("cam-001",)

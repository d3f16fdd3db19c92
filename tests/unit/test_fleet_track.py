"""The operator side counts only live answers to the manifest it published (issue 17)."""

from __future__ import annotations

import json

from agent.fleet.track import Tracker, outcome
from agent.update.transfer.wire import Topics

TOPICS = Topics("ea/v1")
DEP = "default-detector-7"
KEY = "a" * 64


def state(status: str, version: int, reason: str | None = None, key: str = KEY) -> bytes:
    doc = {"status": status, "status_version": version, "reason": reason, "key": key}
    return json.dumps(doc).encode()


def test_replayed_or_older_states_do_not_change_what_the_fleet_sees():
    tracker = Tracker(TOPICS, DEP, KEY)
    topic = TOPICS.model_update("cam-001", DEP)
    tracker.on_message(topic, state("downloading", 1))
    tracker.on_message(topic, state("failed", 4, "health_failed"))
    # A replayed earlier state (same counter) and an old "successful" (lower counter).
    tracker.on_message(topic, state("successful", 4))
    tracker.on_message(topic, state("successful", 3))
    seen = tracker.snapshot()["cam-001"]
    assert (seen.status, seen.status_version, seen.reason) == ("failed", 4, "health_failed")
    assert outcome(tracker.snapshot(), ["cam-001"]).failed == ("cam-001",)


def test_retained_states_and_other_manifests_never_count():
    tracker = Tracker(TOPICS, DEP, KEY, ["cam-001", "cam-002"])
    topic = TOPICS.model_update("cam-001", DEP)
    # A retained answer from before this publication, and a live one to another manifest.
    tracker.on_message(topic, state("successful", 9), retained=True)
    tracker.on_message(TOPICS.model_update("cam-002", DEP), state("successful", 3, key="b" * 64))
    # A device outside the target list refusing it is not counted at all.
    tracker.on_message(TOPICS.model_update("cam-003", DEP), state("failed", 1, "not_targeted"))
    final = tracker.wait(timeout_s=5, answer_s=0.0)
    assert set(final) == {"cam-001", "cam-002"}
    assert final["cam-001"].status == "no_answer"
    assert final["cam-001"].earlier == "successful"
    result = outcome(final, list(final))
    assert result.no_answer == ("cam-001", "cam-002")
    assert not result.all_successful
    assert result.halts(halt_on_failures=5)


def test_garbage_and_foreign_topics_are_ignored():
    tracker = Tracker(TOPICS, DEP, KEY)
    tracker.on_message(TOPICS.model_update("cam-001", DEP), b"{not json")
    tracker.on_message(TOPICS.model_update("cam-001", DEP), json.dumps({"status": "x"}).encode())
    tracker.on_message("ea/v1/elsewhere", state("successful", 9))
    assert tracker.snapshot() == {}
    tracker.on_message(TOPICS.model_update("cam-002", DEP), state("successful", 2))
    assert outcome(tracker.snapshot(), ["cam-001", "cam-002"]).no_answer == ("cam-001",)


def test_progress_moves_with_bytes_and_phases():
    tracker = Tracker(TOPICS, DEP, KEY)
    topic = TOPICS.model_update("cam-001", DEP)
    doc = json.loads(state("downloading", 1))
    doc["progress"] = {"bytes_done": 250, "bytes_total": 1000}
    tracker.on_message(topic, json.dumps(doc).encode())
    assert tracker.snapshot()["cam-001"].fraction == 0.25
    tracker.on_message(topic, state("installing", 2))
    assert tracker.snapshot()["cam-001"].fraction == 1.0


def test_status_last_op_is_the_newest_by_time_and_skips_not_targeted():
    from agent.fleet.fleetview import latest_op

    ops = {
        "model_update/a": {"status": "successful", "status_version": 9, "ts": 100.0},
        "model_update/b": {"status": "failed", "status_version": 1, "ts": 200.0},
        "model_update/c": {
            "status": "failed",
            "reason": "not_targeted",
            "status_version": 1,
            "ts": 300.0,
        },
    }
    assert latest_op(ops) == ("model_update/b", ops["model_update/b"])
    only = {"model_update/c": ops["model_update/c"]}
    assert latest_op(only) == ("model_update/c", ops["model_update/c"])

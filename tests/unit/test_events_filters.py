"""Thresholds, NMS over detections, debounce, the motion gate on real frames, and the event seq."""

from __future__ import annotations

import json

import cv2
import pytest

from agent.events.filters import Debouncer, apply_thresholds, suppress_overlaps
from agent.events.motion import MotionGate
from agent.events.seq import SEQ_FILE, SeqAllocator
from agent.events.types import Detection, DetectionEvent


def det(label, score, box=(0.0, 0.0, 10.0, 10.0)):
    return Detection(label, score, box)


def test_per_label_thresholds():
    dets = [det("person", 0.55), det("car", 0.55), det("dog", 0.3)]
    kept = apply_thresholds(dets, 0.5, {"car": 0.6, "dog": 0.25})
    assert [d.label for d in kept] == ["person", "dog"]


def test_nms_is_per_label():
    dets = [
        det("person", 0.9, (0, 0, 10, 10)),
        det("person", 0.8, (1, 1, 11, 11)),
        det("car", 0.7, (1, 1, 11, 11)),
    ]
    kept = suppress_overlaps(dets, 0.5, 10)
    assert [(d.label, d.score) for d in kept] == [("person", 0.9), ("car", 0.7)]


def test_debounce_needs_consecutive_frames():
    debounce = Debouncer(3)
    face = [det("face", 0.9)]
    assert debounce(face) == []
    assert debounce(face) == []
    assert debounce(face) == face
    assert debounce([]) == []  # a gap resets the streak
    assert debounce(face) == []
    assert Debouncer(1)(face) == face


def _clip_frames(sample_clip, indices):
    cap = cv2.VideoCapture(str(sample_clip))
    frames, index = {}, 0
    while index <= max(indices):
        ok, image = cap.read()
        assert ok
        if index in indices:
            frames[index] = image
        index += 1
    cap.release()
    return frames


def test_motion_gate_on_real_frames(sample_clip):
    # 44 and 45 are the last astronaut and first coffee frames; 44 again is a still scene.
    frames = _clip_frames(sample_clip, {43, 44, 45})
    gate = MotionGate(threshold=0.05)
    assert gate.moved(frames[44])  # first frame counts as motion
    assert not gate.moved(frames[44].copy())
    assert gate.last_fraction == 0.0
    assert gate.moved(frames[45])  # scene cut
    assert gate.last_fraction > 0.3


def test_seq_survives_restart_and_never_repeats(tmp_path):
    first = SeqAllocator(tmp_path, block=10)
    used = [first.next() for _ in range(25)]
    assert used == list(range(1, 26))
    # A crash: no clean shutdown. The next run starts above every seq handed out.
    second = SeqAllocator(tmp_path, block=10)
    after = second.next()
    assert after > max(used)
    third = SeqAllocator(tmp_path, block=10)
    assert third.next() > after
    state = json.loads((tmp_path / SEQ_FILE).read_text(encoding="utf-8"))
    assert state["reserved_until"] > after
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_seq_state_restarts_high(tmp_path, log_events):
    SeqAllocator(tmp_path).next()
    (tmp_path / SEQ_FILE).write_text("{torn", encoding="utf-8")
    recovered = SeqAllocator(tmp_path).next()
    assert recovered > 1_000_000_000_000  # wall-clock milliseconds
    assert any(e["event"] == "seq_state_corrupt" for e in log_events)


def test_event_payload_matches_the_contract():
    event = DetectionEvent(
        seq=7,
        ts=1700000000.12345,
        camera="door",
        model="detector",
        detections=(det("face", 0.91234, (1.04, 2.0, 3.0, 4.0)),),
        frame_seq=3,
        latency_ms=4.567,
    )
    payload = event.to_payload()
    assert payload["seq"] == 7
    assert payload["detections"] == [
        {"label": "face", "score": 0.9123, "box": [1.0, 2.0, 3.0, 4.0]}
    ]
    assert payload["camera"] == "door"
    assert payload["model"] == "detector"
    assert payload["ts"] == pytest.approx(1700000000.123)

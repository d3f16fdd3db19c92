from __future__ import annotations

import random

from agent.events.types import Detection, DetectionEvent
from agent.uplink.drift import DriftMonitor, histogram, total_variation


def event(seq: int, scores: list[float], label: str = "face") -> DetectionEvent:
    dets = tuple(Detection(label, s, (0, 0, 1, 1)) for s in scores)
    return DetectionEvent(seq, 0.0, "door", "detector", dets)


def test_histogram_and_distance() -> None:
    assert histogram([0.05, 0.95, 1.0]) == [1 / 3] + [0.0] * 8 + [2 / 3]
    assert total_variation(histogram([0.9] * 5), histogram([0.1] * 5)) == 1.0
    assert total_variation(histogram([0.5]), histogram([0.5])) == 0.0


def test_stable_stream_does_not_drift_and_shifted_one_does() -> None:
    rng = random.Random(7)
    mon = DriftMonitor(window_events=50, hist_limit=0.3, rate_limit=0.5)
    for i in range(100):
        mon.observe(event(i, [rng.uniform(0.8, 0.95)]))
    verdict = mon.evaluate()["detector"]
    assert not verdict["drifted"]
    # Confidence collapses and detections per event triple: both signals fire.
    for i in range(100, 150):
        mon.observe(event(i, [rng.uniform(0.5, 0.6) for _ in range(3)]))
    verdict = mon.evaluate()["detector"]
    assert verdict["drifted"]
    assert verdict["histogram_distance"] > 0.9
    assert verdict["rate_change"]["face"] > 1.5


def test_no_verdict_before_two_windows() -> None:
    mon = DriftMonitor(window_events=20, hist_limit=0.3, rate_limit=0.5)
    for i in range(39):
        mon.observe(event(i, [0.9]))
    assert mon.evaluate() == {}

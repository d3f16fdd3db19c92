"""Ack pacing of the chunk server: batches that published nothing wait for a shared ack."""

from __future__ import annotations

from agent.fleet.ackpace import AckPace


def test_batches_with_frames_are_acknowledged_at_once() -> None:
    pace = AckPace(every_s=0.2)
    assert pace.take("d", [(1, 0)], frames=3, now_s=10.0) == [(1, 0)]
    assert pace.take("d", [(2, 0)], frames=1, now_s=10.01) == [(2, 0)]
    assert pace.due_s() is None


def test_empty_batches_share_one_ack_at_most_every_period() -> None:
    pace = AckPace(every_s=0.2)
    assert pace.take("d", [(1, 0)], frames=0, now_s=10.0) == [(1, 0)]  # none for a while
    assert pace.take("d", [(2, 0)], frames=0, now_s=10.05) is None
    assert pace.take("d", [(3, 0)], frames=0, now_s=10.1) is None
    assert pace.take("e", [(9, 0)], frames=0, now_s=10.1) == [(9, 0)]  # per deployment
    assert pace.due_s() == 10.2
    assert pace.flush(10.19) == {}
    assert pace.flush(10.2) == {"d": [(2, 0), (3, 0)]}
    assert pace.due_s() is None
    # Waiting names go out with the next batch that publishes frames, whichever is first.
    assert pace.take("d", [(4, 0)], frames=0, now_s=10.3) is None
    assert pace.take("d", [(5, 0)], frames=2, now_s=10.31) == [(4, 0), (5, 0)]
    assert pace.flush(11.0) == {}

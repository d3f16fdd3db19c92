"""Hand-offs between the prepost and infer threads, on a real TFLite model's input buffers."""

from __future__ import annotations

import numpy as np
import pytest

from agent.capture.base import Frame
from agent.capture.ring import FrameRing
from agent.config.model import ModelConfig
from agent.events.filters import Debouncer
from agent.inference.preprocess import Transform
from agent.inference.registry import BackendOptions
from agent.pipeline.handoff import (
    INPUT_BUFFERS,
    REFRESH_MARGIN,
    REFRESH_MIN_AGE_S,
    REFRESH_MIN_S,
    Feed,
    FeedPicker,
    Inferred,
    InputBuffers,
    PostQueue,
    Prepared,
    ewma,
    worth_refreshing,
)
from agent.pipeline.model import LoadedModel, load_model


@pytest.fixture
def loaded(short_range_model):
    model = load_model(ModelConfig(), "tflite", short_range_model, BackendOptions(threads=1))
    yield model
    model.close()


def _prepared(pair: InputBuffers, loaded: LoadedModel, feed: Feed) -> Prepared:
    index, tensor = pair.free_buffer(loaded)
    frame = Frame("cam", 1, 0.0, 0.0, np.zeros((4, 4, 3), np.uint8))
    return Prepared(
        feed, frame, loaded, index, tensor, Transform(4.0, 0.0, 4.0, 0.0, 4, 4), 0.0, 0.0
    )


def test_input_buffers_never_hand_out_the_buffer_being_invoked_or_the_ready_one(loaded):
    buffers = InputBuffers()
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    first = _prepared(buffers, loaded, feed)
    assert buffers.offer(first) is None
    assert buffers.ready is first
    assert buffers.take() is first  # the inference thread now invokes on first.tensor
    assert buffers.prep_wake.is_set()  # prep is told nothing is ready
    in_invoke = first
    seen = {first.index}
    for _ in range(6):
        ready = _prepared(buffers, loaded, feed)
        assert not np.shares_memory(ready.tensor, in_invoke.tensor)
        assert not np.shares_memory(ready.tensor, loaded.backend.input_buffer())
        assert buffers.offer(ready) is None
        # A newer frame while one is ready: a third buffer, and the ready one is replaced.
        newer = _prepared(buffers, loaded, feed)
        assert not np.shares_memory(newer.tensor, in_invoke.tensor)
        assert not np.shares_memory(newer.tensor, ready.tensor)
        assert buffers.offer(newer) is ready
        taken = buffers.take()
        assert taken is newer
        seen |= {ready.index, newer.index}
        in_invoke = taken
    assert seen == set(range(INPUT_BUFFERS))
    assert buffers.refreshed == 6


def test_swap_gets_fresh_buffers_and_clear_drops_the_waiting_frame(loaded, short_range_model):
    pair = InputBuffers()
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    old = _prepared(pair, loaded, feed)
    pair.offer(old)
    assert pair.clear() is old
    assert pair.ready is None
    other = load_model(ModelConfig(), "tflite", short_range_model, BackendOptions(threads=1))
    try:
        fresh = _prepared(pair, other, feed)
        assert not np.shares_memory(fresh.tensor, old.tensor)
    finally:
        other.close()


def test_post_queue_drops_oldest_and_counts(loaded):
    queue = PostQueue(depth=2)
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    items = [Inferred(_prepared(InputBuffers(), loaded, feed), [], float(i), 0.0) for i in range(3)]
    assert queue.put(items[0]) is None
    assert queue.put(items[1]) is None
    assert queue.put(items[2]) is items[0]  # never blocks: the oldest goes
    assert queue.dropped == 1
    assert [queue.get(), queue.get(), queue.get()] == [items[1], items[2], None]


def test_wakes_can_wait_for_the_invoke_and_a_put_wakes_nobody(loaded):
    buffers = InputBuffers()
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    buffers.offer(_prepared(buffers, loaded, feed))
    buffers.prep_wake.clear()
    taken = buffers.take(wake=False)  # the inference thread wakes prepost just before invoke
    assert taken is not None
    assert not buffers.prep_wake.is_set()
    assert not buffers.taken_wake.is_set()
    buffers.wake_prep()
    assert buffers.prep_wake.is_set()
    assert buffers.taken_wake.is_set()
    buffers.prep_wake.clear()
    buffers.taken_wake.clear()
    PostQueue().put(Inferred(taken, [], 0.0, 0.0))
    assert not buffers.prep_wake.is_set()  # the inference thread wakes prepost itself


def test_cameras_are_taken_in_turn_and_an_idle_one_is_skipped():
    rings = [FrameRing(name) for name in ("a", "b", "c")]
    picker = FeedPicker([Feed(ring, 0, Debouncer(1), None) for ring in rings])
    image = np.zeros((2, 2, 3), np.uint8)
    taken = []
    for _ in range(2):
        for ring in rings[:2]:  # c publishes nothing
            ring.publish(image)
        for _ in range(3):
            picked = picker.newest()
            taken.append(None if picked is None else picked[1].camera)
    assert taken == ["a", "b", None, "a", "b", None]


def test_refresh_only_when_a_newer_frame_can_be_ready_before_the_model_is_free():
    # 10 ms invoke started at t=100, 1 ms preprocess, the ready frame captured at t=99.99.
    needed = 0.001 * REFRESH_MARGIN + REFRESH_MIN_S
    ready = 99.99
    assert worth_refreshing(100.0, 100.0, 0.010, 0.001, ready)
    assert worth_refreshing(100.010 - needed - 0.0001, 100.0, 0.010, 0.001, ready)
    assert not worth_refreshing(100.010 - needed + 0.0001, 100.0, 0.010, 0.001, ready)
    assert not worth_refreshing(100.02, 100.0, 0.010, 0.001, ready)  # model already free
    assert not worth_refreshing(100.0, 100.0, 0.0, 0.0, ready)  # no estimates: use what is ready


def test_no_refresh_of_a_frame_that_is_still_fresh_when_the_model_takes_it():
    # A 1 ms model fed faster than it runs: the ready frame is at most ~1 ms old when the
    # model is free, so a second preprocess would buy less than REFRESH_MIN_AGE_S.
    free_at = 100.001
    young = free_at - REFRESH_MIN_AGE_S + 0.0001
    old = free_at - REFRESH_MIN_AGE_S - 0.0001
    assert not worth_refreshing(100.0, 100.0, 0.001, 0.0001, young)
    assert worth_refreshing(100.0, 100.0, 0.001, 0.0001, old)
    assert ewma(0.0, 5.0) == 5.0
    assert ewma(1.0, 2.0) == pytest.approx(1.1)

"""Hand-offs between prep, infer and post threads, on a real TFLite model's input buffers."""

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
    Feed,
    Inferred,
    InputPair,
    PostQueue,
    Prepared,
    adapt_slack,
    ewma,
    prep_delay_s,
)
from agent.pipeline.model import LoadedModel, load_model


@pytest.fixture
def loaded(short_range_model):
    model = load_model(ModelConfig(), "tflite", short_range_model, BackendOptions(threads=1))
    yield model
    model.close()


def _prepared(pair: InputPair, loaded: LoadedModel, feed: Feed) -> Prepared:
    index, tensor = pair.free_buffer(loaded)
    frame = Frame("cam", 1, 0.0, 0.0, np.zeros((4, 4, 3), np.uint8))
    return Prepared(
        feed, frame, loaded, index, tensor, Transform(4.0, 0.0, 4.0, 0.0, 4, 4), 0.0, 0.0
    )


def test_input_pair_never_hands_out_the_buffer_being_invoked(loaded):
    pair = InputPair()
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    first = _prepared(pair, loaded, feed)
    pair.offer(first)
    assert pair.has_ready()
    assert pair.take() is first  # the inference thread now invokes on first.tensor
    assert pair.prep_wake.is_set()  # prep is told the other buffer is free
    in_invoke = first
    for _ in range(4):  # alternate: each new buffer differs from the one in invoke
        nxt = _prepared(pair, loaded, feed)
        assert not np.shares_memory(nxt.tensor, in_invoke.tensor)
        assert not np.shares_memory(nxt.tensor, loaded.backend.input_buffer())
        pair.offer(nxt)
        taken = pair.take()
        assert taken is nxt
        in_invoke = taken


def test_swap_gets_a_fresh_pair_and_clear_drops_the_waiting_frame(loaded, short_range_model):
    pair = InputPair()
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    old = _prepared(pair, loaded, feed)
    pair.offer(old)
    assert pair.clear() is old
    assert not pair.has_ready()
    other = load_model(ModelConfig(), "tflite", short_range_model, BackendOptions(threads=1))
    try:
        fresh = _prepared(pair, other, feed)
        assert not np.shares_memory(fresh.tensor, old.tensor)
    finally:
        other.close()


def test_post_queue_drops_oldest_and_counts(loaded):
    queue = PostQueue(depth=2)
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    items = [Inferred(_prepared(InputPair(), loaded, feed), [], float(i), 0.0) for i in range(3)]
    assert queue.put(items[0]) is None
    assert queue.put(items[1]) is None
    assert queue.put(items[2]) is items[0]  # never blocks: the oldest goes
    assert queue.dropped == 1
    assert [queue.get(), queue.get(), queue.get()] == [items[1], items[2], None]


def test_prep_delay_takes_the_frame_just_before_the_model_is_free():
    # 10 ms invoke started at t=100, 1 ms preprocess, 2 ms slack: take it after 7 ms.
    assert prep_delay_s(100.0, 100.0, 0.010, 0.001, 0.002) == pytest.approx(0.007)
    assert prep_delay_s(100.02, 100.0, 0.010, 0.001, 0.002) == 0.0  # model already free
    assert prep_delay_s(100.0, 100.0, 0.0, 0.0, 0.0) == 0.0  # no estimate yet: take it now
    assert ewma(0.0, 5.0) == 5.0
    assert ewma(1.0, 2.0) == pytest.approx(1.1)


def test_slack_grows_by_lateness_and_decays_to_a_floor():
    invoke = 0.010
    floor = 0.1 * invoke + 0.0002
    slack = adapt_slack(0.0, invoke, 0.0)
    assert slack == pytest.approx(floor)
    slack = adapt_slack(slack, invoke, 0.003)  # the frame came 3 ms late: start 3 ms earlier
    assert slack == pytest.approx(floor + 0.003 + 0.0002)
    for _ in range(10):  # late again and again: prepare right away (slack = invoke)
        slack = adapt_slack(slack, invoke, 0.004)
    assert slack == pytest.approx(invoke)
    assert prep_delay_s(100.0, 100.0, invoke, 0.001, slack) == 0.0
    for _ in range(5000):  # always in time: back to the floor, never below
        slack = adapt_slack(slack, invoke, 0.0)
    assert slack == pytest.approx(floor)

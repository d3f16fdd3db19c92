"""Hand-offs between prep, infer and post threads, on a real TFLite model's input buffers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from agent.capture.base import Frame
from agent.capture.ring import FrameRing
from agent.config.model import ModelConfig
from agent.events.filters import Debouncer
from agent.inference.preprocess import Transform
from agent.inference.registry import BackendOptions
from agent.pipeline.handoff import (
    LATE_TARGET,
    SLACK_MIN_S,
    SLACK_STEP_FRACTION,
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


def test_slack_steps_up_when_late_and_creeps_down_when_in_time():
    invoke = 0.010
    step = SLACK_STEP_FRACTION * invoke
    slack = adapt_slack(0.0, invoke, 0.0)
    assert slack == pytest.approx(SLACK_MIN_S)  # never below the floor
    slack = adapt_slack(slack, invoke, 0.003)  # late: take the next frame a step earlier
    assert slack == pytest.approx(SLACK_MIN_S + step * (1 - LATE_TARGET))
    for _ in range(100):  # late again and again: prepare right away (slack = invoke)
        slack = adapt_slack(slack, invoke, 0.004)
    assert slack == pytest.approx(invoke)
    assert prep_delay_s(100.0, 100.0, invoke, 0.001, slack) == 0.0
    # One hiccup costs one step, not its length: the next frames stay fresh.
    before = slack = 0.002
    slack = adapt_slack(slack, invoke, 0.008)
    assert slack == pytest.approx(before + step * (1 - LATE_TARGET))
    for _ in range(5000):  # always in time: back to the floor, never below
        slack = adapt_slack(slack, invoke, 0.0)
    assert slack == pytest.approx(SLACK_MIN_S)


def test_slack_settles_where_the_target_share_of_frames_is_late():
    rng = random.Random(7)
    invoke = 0.010
    jitter = [rng.expovariate(1 / 0.001) for _ in range(20000)]  # prep wake-up delays
    slack, late = 0.0, 0
    for i, delay in enumerate(jitter):
        is_late = delay > slack
        late += is_late and i >= len(jitter) // 2
        slack = adapt_slack(slack, invoke, delay - slack if is_late else 0.0)
    share = late / (len(jitter) // 2)
    assert share == pytest.approx(LATE_TARGET, abs=0.03)
    # And the slack sits near that quantile of the jitter (exponential: -ln(q) * mean).
    assert slack == pytest.approx(-math.log(LATE_TARGET) * 0.001, rel=0.35)

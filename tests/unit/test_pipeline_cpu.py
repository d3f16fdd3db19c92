"""CPU accounting of the pipeline threads (issue 19): the meter, replaced frames, ratios."""

from __future__ import annotations

import time

import numpy as np
import pytest

from agent.capture.base import Frame
from agent.capture.ring import FrameRing
from agent.config.model import ModelConfig
from agent.events.filters import Debouncer
from agent.inference.preprocess import Transform
from agent.inference.registry import BackendOptions
from agent.pipeline.bench import round_ratios
from agent.pipeline.cpu import CpuMeter
from agent.pipeline.handoff import Feed, InputBuffers, Prepared
from agent.pipeline.model import load_model


def _spin_cpu_ns(ns: int) -> int:
    """Burn at least ``ns`` of this thread's CPU; returns what was burnt."""
    start = time.thread_time_ns()
    while time.thread_time_ns() - start < ns:
        sum(range(200))
    return time.thread_time_ns() - start


def test_meter_counts_this_threads_cpu_and_leaves_out_what_is_excluded():
    meter = CpuMeter()
    spent = _spin_cpu_ns(20_000_000)
    first = meter.take()
    assert first >= spent  # everything since the meter was made
    time.sleep(0.05)  # sleeping costs no CPU: wall-clock load does not reach the meter
    excluded = _spin_cpu_ns(20_000_000)
    meter.exclude(excluded)
    assert meter.take() < excluded // 2  # the excluded work is gone, the sleep never counted
    assert meter.take() >= 0


def test_a_replaced_ready_frame_hands_its_cpu_to_the_frame_that_replaced_it(
    short_range_model,
):
    loaded = load_model(ModelConfig(), "tflite", short_range_model, BackendOptions(threads=1))
    try:
        buffers = InputBuffers()
        feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)

        def prepared(cpu_ns: int) -> Prepared:
            index, tensor = buffers.free_buffer(loaded)
            frame = Frame("cam", 1, 0.0, 0.0, np.zeros((4, 4, 3), np.uint8))
            transform = Transform(4.0, 0.0, 4.0, 0.0, 4, 4)
            return Prepared(feed, frame, loaded, index, tensor, transform, 0.0, 0.0, cpu_ns)

        first, newer = prepared(300), prepared(200)
        assert buffers.offer(first) is None
        assert buffers.offer(newer) is first
        assert buffers.take() is newer
        assert newer.prep_cpu_ns == 500  # the work on the frame never used is not lost
    finally:
        loaded.close()


@pytest.mark.parametrize(
    ("raw", "pipe", "expected"),
    [
        ([100.0, 200.0, 100.0], [97.0, 150.0, 101.0], [0.97, 0.75, 1.01]),
        ([100.0, 0.0], [90.0, 50.0], [0.9]),  # a raw round with nothing measured is left out
        ([], [], []),
    ],
)
def test_round_ratios_pair_each_pipeline_round_with_its_raw_round(raw, pipe, expected):
    assert round_ratios(raw, pipe) == expected

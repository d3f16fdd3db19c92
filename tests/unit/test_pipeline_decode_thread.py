"""Which thread feeds and decodes: the inference thread when the model waits for the camera.

A camera slower than the model leaves no frame waiting when an invoke ends; the
inference thread then decodes the outputs itself (in order) and takes and prepares the
next frame itself, and the prepost thread is woken only when there is work for it.
"""

from __future__ import annotations

import functools
import threading
import time

import numpy as np
import pytest

from agent.capture.base import Frame
from agent.capture.ring import FrameRing
from agent.config.model import ModelConfig
from agent.events.filters import Debouncer
from agent.events.seq import SeqAllocator
from agent.events.types import DetectionEvent
from agent.inference.registry import BackendOptions
from agent.pipeline.bench_sources import ReplaySource, load_frames
from agent.pipeline.cpu import CpuMeter
from agent.pipeline.faults import SlotFaults
from agent.pipeline.handoff import (
    Feed,
    FeedPicker,
    Inferred,
    InputBuffers,
    PostQueue,
    Prepared,
    Timings,
)
from agent.pipeline.model import LoadedModel, load_model
from agent.pipeline.post import PostStage
from agent.pipeline.runner import Pipeline
from tests.unit.test_capture_worker import wait_for
from tests.unit.test_pipeline_runner import config


@pytest.fixture
def loaded(short_range_model):
    model = load_model(ModelConfig(), "tflite", short_range_model, BackendOptions(threads=1))
    yield model
    model.close()


def _face_outputs(loaded: LoadedModel, image: np.ndarray) -> Inferred:
    """A real invoke on ``image``: outputs the decoder turns into detections."""
    feed = Feed(FrameRing("cam"), 0, Debouncer(1), None)
    buffers = InputBuffers()
    index, tensor = buffers.free_buffer(loaded)
    transform = loaded.preprocessor.prepare(image, tensor)
    frame = Frame("cam", 1, time.monotonic(), time.time(), image)
    prepared = Prepared(feed, frame, loaded, index, tensor, transform, 0.0, 0.0)
    return Inferred(prepared, loaded.backend.infer(tensor), 0.0, 0.0)


@pytest.fixture
def face_image(sample_clip):
    frames = load_frames(sample_clip)
    return frames[0]  # the astronaut: one face


def _poster(tmp_path, events: list[DetectionEvent]) -> PostStage:
    model = ModelConfig(slot="detector", threshold=0.7)
    faults = SlotFaults(model.slot, model.decoder)
    return PostStage(
        model, seq=SeqAllocator(tmp_path), sink=events.append, faults=faults, timings=Timings(8)
    )


def test_decode_here_only_when_nothing_is_queued_before_and_nobody_decodes(
    loaded, face_image, tmp_path
):
    events: list[DetectionEvent] = []
    poster, queue, cpu = _poster(tmp_path, events), PostQueue(), CpuMeter()
    first, second = _face_outputs(loaded, face_image), _face_outputs(loaded, face_image)
    queue.put(first)
    # Outputs queued before it: decoding `second` now would put its event first.
    assert not poster.finish_now(second, queue, cpu)
    assert events == []
    assert poster.finish_queued(queue, cpu)
    assert not poster.finish_queued(queue, cpu)  # nothing left
    assert len(events) == 1
    assert poster.finish_now(second, queue, cpu)
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert len(events) == 2
    # The prepost thread decoding: the inference thread does not wait for it, it queues.
    held = threading.Event()
    release = threading.Event()

    def slow_sink(event: DetectionEvent) -> None:
        held.set()
        release.wait(5)
        events.append(event)

    (tmp_path / "slow").mkdir()
    slow = PostStage(
        ModelConfig(slot="detector", threshold=0.7),
        seq=SeqAllocator(tmp_path / "slow"),
        sink=slow_sink,
        faults=SlotFaults("detector", "blazeface"),
        timings=Timings(8),
    )
    queue.put(_face_outputs(loaded, face_image))
    decoding = threading.Thread(target=slow.finish_queued, args=(queue, CpuMeter()))
    decoding.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        assert not slow.finish_now(_face_outputs(loaded, face_image), queue, CpuMeter())
        assert time.monotonic() - started < 0.5
    finally:
        release.set()
        decoding.join(5)


def test_a_decoder_bug_is_counted_and_the_calling_thread_goes_on(loaded, face_image, tmp_path):
    poster, queue = _poster(tmp_path, []), PostQueue()
    broken = _face_outputs(loaded, face_image)
    broken.outputs = [broken.outputs[0]]  # one output: the decoder raises
    assert poster.finish_now(broken, queue, CpuMeter())
    assert broken.prepared.feed.discarded == 1


def test_the_take_wakes_prepost_only_for_work_and_a_ring_tells_what_is_new():
    buffers = InputBuffers()
    buffers.wake_prep(work=False)
    assert buffers.taken_wake.is_set()
    assert not buffers.prep_wake.is_set()  # a prepost thread idling for frames sleeps on
    buffers.wake_prep(work=True)
    assert buffers.prep_wake.is_set()
    ring = FrameRing("cam")
    picker = FeedPicker([Feed(ring, 0, Debouncer(1), None)])
    assert not ring.has_new()
    assert not picker.any_new()
    ring.publish(np.zeros((2, 2, 3), np.uint8))
    assert ring.has_new()
    assert picker.any_new()
    assert picker.newest() is not None
    assert not ring.has_new()
    assert not picker.any_new()


def test_a_camera_slower_than_the_model_is_fed_and_decoded_by_the_inference_thread(
    sample_clip, short_range_model, tmp_path
):
    # 40 frames/s against a ~1 ms model: no frame waits when an invoke ends.
    threads: list[str] = []
    events: list[DetectionEvent] = []

    def sink(event: DetectionEvent) -> None:
        threads.append(threading.current_thread().name)
        events.append(event)

    opener = functools.partial(ReplaySource, load_frames(sample_clip), 40.0)
    cfg = config(sample_clip, short_range_model, tmp_path)
    pipeline = Pipeline(cfg, sink, tmp_path, paced=True, opener=opener)
    pipeline.start()
    try:
        assert wait_for(lambda: len(events) >= 12, 20)
        cpu_s = {
            t.name: time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            for t in threading.enumerate()
            if t.name in ("prepost:detector", "infer:detector") and t.ident is not None
        }
    finally:
        pipeline.stop()
    # Before, every event came from the prepost thread; a loaded machine may still hand
    # off a few, when an invoke outlasts a frame period.
    assert threads.count("infer:detector") >= len(threads) // 2
    # The inference thread also takes and prepares the frames: prepost stays asleep (it
    # did the preprocessing before, about a quarter of the slot's CPU at this rate).
    assert cpu_s["prepost:detector"] < 0.1 * cpu_s["infer:detector"], cpu_s
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs))

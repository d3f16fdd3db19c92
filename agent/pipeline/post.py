"""The last stage of a model slot: decode, filter, debounce, emit, record the timings.

Run by the ``prepost:<slot>`` thread, or by the single thread when ``overlap_stages`` is off.
"""

from __future__ import annotations

import threading
import time

from agent.capture.base import Frame
from agent.config.model import ModelConfig
from agent.events.filters import apply_thresholds, suppress_overlaps
from agent.events.seq import SeqAllocator
from agent.events.types import Detection, DetectionEvent, EventSink
from agent.log import get_logger
from agent.pipeline.cpu import CpuMeter
from agent.pipeline.faults import SlotFaults
from agent.pipeline.handoff import Inferred, PostQueue, Timings

log = get_logger(__name__)


class PostStage:
    def __init__(
        self,
        model: ModelConfig,
        *,
        seq: SeqAllocator,
        sink: EventSink,
        faults: SlotFaults,
        timings: Timings,
    ) -> None:
        self.model = model
        self._seq = seq
        self._sink = sink
        self._faults = faults
        self._timings = timings
        self.events = 0
        self.sink_errors = 0
        # One thread decodes at a time, and frames in the order they were inferred.
        self._order = threading.Lock()

    def finish_queued(self, queue: PostQueue, cpu: CpuMeter) -> bool:
        """Finish the oldest queued outputs (the prepost thread); False when none are queued."""
        with self._order:
            item = queue.get()
            if item is None:
                return False
            self._finish_safely(item, cpu)
            return True

    def finish_now(self, item: Inferred, queue: PostQueue, cpu: CpuMeter) -> bool:
        """Finish ``item`` in the calling thread unless that would reorder or wait.

        The inference thread calls it when no frame waits for the model: decoding at
        once, on outputs still in its cache, spares the prepost thread a wake-up. False
        (the caller queues ``item``) while outputs are queued before it or the prepost
        thread is decoding: the inference thread never blocks here.
        """
        if not self._order.acquire(blocking=False):
            return False
        try:
            if len(queue):
                return False
            self._finish_safely(item, cpu)
            return True
        finally:
            self._order.release()

    def _finish_safely(self, item: Inferred, cpu: CpuMeter) -> None:
        try:
            self.finish(item, cpu)
        except Exception as exc:  # the calling thread must survive a decoder bug
            item.prepared.feed.discarded += 1
            self._faults.failed(exc, "postprocess")

    def finish(self, item: Inferred, cpu: CpuMeter) -> None:
        start = time.monotonic()
        prepared = item.prepared
        feed, frame, model = prepared.feed, prepared.frame, self.model
        detections = prepared.loaded.decoder(item.outputs, prepared.transform)
        self._faults.decoded()
        if detections:
            detections = apply_thresholds(detections, model.threshold, model.label_thresholds)
            if model.decoder == "ssd_postprocess" and len(detections) > 1:
                detections = suppress_overlaps(detections, model.nms_iou, model.max_detections)
        detections = feed.debounce(detections)
        if detections:
            self._emit(frame, detections)
        end = time.monotonic()
        feed.inferred.add(end)
        self._timings.record(item, start, end, post_cpu_ns=cpu.take())

    def _emit(self, frame: Frame, detections: list[Detection]) -> None:
        event = DetectionEvent(
            seq=self._seq.next(),
            ts=frame.captured_wall_s,
            camera=frame.camera,
            model=self.model.slot,
            detections=tuple(detections),
            frame_seq=frame.seq,
            latency_ms=(time.monotonic() - frame.captured_mono_s) * 1000.0,
        )
        self.events += 1
        try:
            self._sink(event)
        except Exception as exc:  # a sink bug must not stop inference
            self.sink_errors += 1
            log.exception("event_sink_failed", slot=self.model.slot, error=str(exc))

"""Detection results and the events the pipeline emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    # x1, y1, x2, y2 in pixels of the original frame.
    box: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class DetectionEvent:
    seq: int  # per-device monotonic, survives restarts
    ts: float  # wall-clock seconds when the frame was captured
    camera: str
    model: str  # model slot
    detections: tuple[Detection, ...]
    frame_seq: int = 0
    latency_ms: float = 0.0  # capture to event
    extra: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """The JSON payload of ``<root>/d/<dev>/e/detection`` (CONTRACT §4)."""
        return {
            "seq": self.seq,
            "ts": round(self.ts, 3),
            "camera": self.camera,
            "model": self.model,
            "detections": [
                {"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]}
                for d in self.detections
            ],
            "frame_seq": self.frame_seq,
            "latency_ms": round(self.latency_ms, 2),
            **self.extra,
        }


class EventSink(Protocol):
    """Receives events from the inference thread. Must not block (queue and return)."""

    def __call__(self, event: DetectionEvent) -> None: ...

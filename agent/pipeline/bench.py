"""Benchmark: the raw invoke loop and the full pipeline on the same model and threads.

The raw loop is the physical limit (invoke on a prepared tensor, outputs copied). The
pipeline run reads the sample clip flat-out, so the source is faster than the model
and any gap between the two figures is pipeline overhead.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.root import AgentConfig
from agent.events.types import DetectionEvent
from agent.inference.registry import BackendOptions, create_backend
from agent.pipeline.runner import Pipeline
from agent.pipeline.stats import summarise

WARMUP_INVOKES = 5
PIPELINE_WARMUP_S = 1.0


@dataclass(frozen=True, slots=True)
class BenchSettings:
    model: Path
    clip: Path
    seconds: float = 10.0
    threads: int = 2
    backend: str = "tflite"
    decoder: str = "blazeface"


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB, from /proc (0 elsewhere)."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = float(rest.split()[0]) / 1024.0
    except OSError:
        pass
    return round(values["VmRSS"], 1), round(values["VmHWM"], 1)


def raw_loop(settings: BenchSettings, seconds: float) -> dict[str, Any]:
    backend = create_backend(
        settings.backend, settings.model, BackendOptions(threads=settings.threads)
    )
    try:
        tensor = backend.input_buffer()
        first_start = time.perf_counter()
        backend.infer(tensor)
        first_ms = (time.perf_counter() - first_start) * 1000.0
        for _ in range(WARMUP_INVOKES):
            backend.infer(tensor)
        samples: list[float] = []
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            backend.infer(tensor)
            after = time.perf_counter()
            samples.append((after - now) * 1000.0)
            now = after
        elapsed = now - start
        runtime = backend.runtime
    finally:
        backend.close()
    return {
        "ips": round(len(samples) / elapsed, 2),
        "invokes": len(samples),
        "first_ms": round(first_ms, 3),
        "latency_ms": summarise(samples),
        "runtime": {"name": runtime.name, "version": runtime.version},
    }


def bench_config(settings: BenchSettings, state_dir: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(state_dir)},
            "cameras": [{"name": "bench", "source": f"file:{settings.clip}", "loop": True}],
            "models": [
                {
                    "slot": "bench",
                    "path": str(settings.model),
                    "backend": settings.backend,
                    "decoder": settings.decoder,
                    "threads": settings.threads,
                }
            ],
        }
    )


def pipeline_run(settings: BenchSettings, seconds: float) -> dict[str, Any]:
    events = 0
    lock = threading.Lock()

    def sink(event: DetectionEvent) -> None:  # noqa: ARG001 - only counted
        nonlocal events
        with lock:
            events += 1

    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as state:
        pipeline = Pipeline(
            bench_config(settings, Path(state)),
            sink,
            Path(state),
            paced=False,
            timing_samples=200_000,
        )
        pipeline.start()
        try:
            time.sleep(PIPELINE_WARMUP_S)
            worker = pipeline.workers["bench"]
            feed = worker.feeds[0]
            inferred0, captured0 = feed.inferred.total, feed.ring.published
            skip = len(worker.timings.e2e_ms.values())
            start = time.perf_counter()
            time.sleep(seconds)
            elapsed = time.perf_counter() - start
            inferred = feed.inferred.total - inferred0
            captured = feed.ring.published - captured0
            e2e = worker.timings.e2e_ms.values()[skip:]
            infer_ms = worker.timings.inference_ms.values()[skip:]
            health = pipeline.health_snapshot()
        finally:
            pipeline.stop()
    return {
        "ips": round(inferred / elapsed, 2),
        "frames_inferred": inferred,
        "capture_fps": round(captured / elapsed, 2),
        "dropped": max(0, captured - inferred),
        "events": events,
        "latency_ms": summarise(e2e),
        "inference_ms": summarise(infer_ms),
        "health": health,
    }


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    half = max(0.5, settings.seconds / 2)
    raw = raw_loop(settings, half)
    pipe = pipeline_run(settings, half)
    current, peak = rss_mb()
    return {
        "model": str(settings.model),
        "threads": settings.threads,
        "backend": settings.backend,
        "runtime": raw["runtime"],
        "raw": raw,
        "pipeline": pipe,
        "ratio": round(pipe["ips"] / raw["ips"], 4) if raw["ips"] else 0.0,
        "latency_ms": pipe["latency_ms"],
        "rss_mb": current,
        "rss_peak_mb": peak,
    }

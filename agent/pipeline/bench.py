"""Benchmark: the raw invoke loop and the full pipeline on the same model and threads.

The raw loop is the physical limit (invoke on a prepared tensor, outputs copied). The
pipeline round is fed faster than the model (decoded frames replayed at 1.5x the raw
rate by default; ``source="file"`` decodes the clip flat-out on the same cores), so
any gap between the two figures is pipeline overhead, or with the file source the
decoding's share of the cores too.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Literal

from agent.capture import open_source
from agent.config.root import AgentConfig
from agent.events.types import DetectionEvent
from agent.inference.base import RuntimeInfo
from agent.pipeline.bench_sources import ReplaySource, load_frames
from agent.pipeline.model import backend_options, load_model
from agent.pipeline.runner import Pipeline, SourceOpener
from agent.stats import summarise

WARMUP_INVOKES = 5
PIPELINE_WARMUP_S = 0.5
REPLAY_SPEEDUP = 1.5
ROUND_S = 2.0  # length of one raw + pipeline pair is twice this
MIN_ROUNDS = 5  # raw and pipeline rounds alternate (ABAB): a median and a spread need several

__all__ = ["BenchSettings", "ReplaySource", "load_frames", "run_bench"]


@dataclass(frozen=True, slots=True)
class BenchSettings:
    model: Path
    clip: Path
    seconds: float = 10.0
    threads: int = 2
    backend: str = "tflite"
    decoder: str = "blazeface"
    source: Literal["file", "replay"] = "replay"
    # Replay at this rate (a camera slower than the model: CPU per frame at camera rate)
    # instead of 1.5x the raw rate; None: faster than the model.
    replay_fps: float | None = None
    input_size: tuple[int, int] | None = None  # (width, height) for dynamic-size models
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers; empty: CPU
    overlap_stages: bool = True  # prep / infer / post threads (False: one thread)
    rounds: int = MIN_ROUNDS  # at least this many raw and pipeline rounds, alternating
    # Every other key of a configured [[models]] entry (bench --config): input adaptation,
    # thresholds, labels, as the slot will run.
    model_settings: dict[str, Any] = field(default_factory=dict)


def load_average() -> float:
    """1-minute load average (0 where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


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


class RawLoop:
    """The physical limit: invoke on a prepared tensor, outputs copied, nothing else.

    The backend is loaded per round and closed before the pipeline round, so only one
    model is loaded at a time (the RSS figure is for one model).
    """

    def __init__(self, settings: BenchSettings) -> None:
        self._settings = settings
        self.first_ms = 0.0
        self.runtime = RuntimeInfo("", "")
        self.input_shape: list[int] = []
        self.samples: list[float] = []
        self.elapsed_s = 0.0
        self.round_ips: list[float] = []

    def run(self, seconds: float) -> None:
        settings = self._settings
        # The very options the pipeline's loader builds: same threads, size, providers.
        config = bench_config(settings, Path(tempfile.gettempdir()))
        options = backend_options(config, config.models[0], settings.model)
        # Loaded as the pipeline loads it (a dynamic input sized by the file's metadata).
        loaded = load_model(
            config.models[0], settings.backend, settings.model, options, smoke=False
        )
        backend = loaded.backend
        try:
            tensor = backend.input_buffer()
            start = time.perf_counter()
            backend.infer(tensor)
            if not self.first_ms:
                self.first_ms = (time.perf_counter() - start) * 1000.0
            for _ in range(WARMUP_INVOKES):
                backend.infer(tensor)
            self.runtime = backend.runtime
            self.input_shape = list(backend.input_spec.tensor.shape)
            infer, samples = backend.infer, self.samples
            before = len(samples)
            start = now = time.perf_counter()
            deadline = start + seconds
            while now < deadline:
                infer(tensor)
                after = time.perf_counter()
                samples.append((after - now) * 1000.0)
                now = after
            self.elapsed_s += now - start
            self.round_ips.append((len(samples) - before) / (now - start) if now > start else 0.0)
        finally:
            backend.close()

    @property
    def ips(self) -> float:
        return len(self.samples) / self.elapsed_s if self.elapsed_s else 0.0

    def result(self) -> dict[str, Any]:
        return {
            "ips": round(len(self.samples) / self.elapsed_s, 2) if self.elapsed_s else 0.0,
            "invokes": len(self.samples),
            "first_ms": round(self.first_ms, 3),
            "latency_ms": summarise(self.samples),
            "runtime": {"name": self.runtime.name, "version": self.runtime.version},
            "input_shape": self.input_shape,
        }


def bench_config(settings: BenchSettings, state_dir: Path) -> AgentConfig:
    return AgentConfig.model_validate(
        {
            "storage": {"state_dir": str(state_dir)},
            "cameras": [{"name": "bench", "source": f"file:{settings.clip}", "loop": True}],
            "models": [
                {
                    **settings.model_settings,
                    "slot": "bench",
                    "path": str(settings.model),
                    "backend": settings.backend,
                    "decoder": settings.decoder,
                    "threads": settings.threads,
                    "input_size": list(settings.input_size or ()),
                    "onnx_providers": list(settings.providers),
                    "overlap_stages": settings.overlap_stages,
                }
            ],
        }
    )


@dataclass(slots=True)
class PipelineTally:
    inferred: int = 0
    captured: int = 0
    events: int = 0
    elapsed_s: float = 0.0
    rss_mb: float = 0.0
    e2e_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    preprocess_ms: list[float] = field(default_factory=list)
    postprocess_ms: list[float] = field(default_factory=list)
    handoff_ms: list[float] = field(default_factory=list)
    capture_age_ms: list[float] = field(default_factory=list)
    overhead_cpu_us: list[float] = field(default_factory=list)
    prep_cpu_us: list[float] = field(default_factory=list)
    infer_cpu_us: list[float] = field(default_factory=list)
    post_cpu_us: list[float] = field(default_factory=list)
    inference_cpu_us: list[float] = field(default_factory=list)
    capture_cpu_ms: list[float] = field(default_factory=list)  # per round, per captured frame
    round_ips: list[float] = field(default_factory=list)
    post_dropped: int = 0
    refreshed: int = 0
    health: dict[str, dict[str, str]] = field(default_factory=dict)

    def result(self) -> dict[str, Any]:
        elapsed = self.elapsed_s or 1.0
        return {
            "ips": round(self.inferred / elapsed, 2),
            "frames_inferred": self.inferred,
            "capture_fps": round(self.captured / elapsed, 2),
            "dropped": max(0, self.captured - self.inferred),
            "events": self.events,
            "latency_ms": summarise(self.e2e_ms),
            "inference_ms": summarise(self.inference_ms),
            "preprocess_ms": summarise(self.preprocess_ms),
            "postprocess_ms": summarise(self.postprocess_ms),
            "handoff_ms": summarise(self.handoff_ms),
            "capture_age_ms": summarise(self.capture_age_ms),
            "overhead_cpu_us": summarise(self.overhead_cpu_us),
            # Per stage: prep, inference outside invoke, post (each thread its own CPU clock).
            "cpu_us_by_stage": {
                "prep": summarise(self.prep_cpu_us),
                "infer": summarise(self.infer_cpu_us),
                "post": summarise(self.post_cpu_us),
            },
            # The invoke's own CPU in the calling thread (all of it with one thread).
            "inference_cpu_us": summarise(self.inference_cpu_us),
            "post_dropped": self.post_dropped,
            "refreshed": self.refreshed,
            "health": self.health,
        }


def pipeline_round(
    settings: BenchSettings,
    seconds: float,
    tally: PipelineTally,
    opener: SourceOpener | None = None,
) -> None:
    """Start the pipeline, let it warm up, measure ``seconds`` of steady state, stop it."""
    lock = threading.Lock()
    events = 0

    def sink(event: DetectionEvent) -> None:  # noqa: ARG001 - only counted
        nonlocal events
        with lock:
            events += 1

    with tempfile.TemporaryDirectory(prefix="edge-agent-bench-") as state:
        config = bench_config(settings, Path(state))
        opener = opener or (lambda cam: open_source(cam, config.board, paced=False))
        pipeline = Pipeline(
            config, sink, Path(state), paced=False, opener=opener, timing_samples=200_000
        )
        pipeline.start()
        try:
            time.sleep(PIPELINE_WARMUP_S)
            worker = pipeline.workers["bench"]
            feed = worker.feeds[0]
            inferred0, captured0, events0 = feed.inferred.total, feed.ring.published, events
            timings = worker.timings
            skip = len(timings.e2e_ms.values())
            post_dropped0, refreshed0 = worker.post_dropped, worker.refreshed
            cpu0 = cpu_split(worker.thread_idents())
            start = time.perf_counter()
            time.sleep(seconds)
            elapsed = time.perf_counter() - start
            cpu1 = cpu_split(worker.thread_idents())
            tally.elapsed_s += elapsed
            inferred = feed.inferred.total - inferred0
            tally.inferred += inferred
            tally.round_ips.append(inferred / elapsed if elapsed > 0 else 0.0)
            cpu_keys = ("prep_cpu_us", "infer_cpu_us", "post_cpu_us", "inference_cpu_us")
            for key in ("overhead_cpu_us", *cpu_keys):
                getattr(tally, key).extend(getattr(timings, key).values()[skip:])
            captured = feed.ring.published - captured0
            tally.captured += captured
            if captured and cpu0.process_ns:
                tally.capture_cpu_ms.append(cpu1.outside_slot_ns(cpu0) / 1e6 / captured)
            tally.events += events - events0
            tally.e2e_ms += timings.e2e_ms.values()[skip:]
            tally.inference_ms += timings.inference_ms.values()[skip:]
            tally.preprocess_ms += timings.preprocess_ms.values()[skip:]
            tally.postprocess_ms += timings.postprocess_ms.values()[skip:]
            tally.handoff_ms += timings.handoff_ms.values()[skip:]
            tally.capture_age_ms += timings.capture_age_ms.values()[skip:]
            tally.post_dropped += worker.post_dropped - post_dropped0
            tally.refreshed += worker.refreshed - refreshed0
            tally.health = pipeline.health_snapshot()
            tally.rss_mb = max(tally.rss_mb, rss_mb()[0])
        finally:
            pipeline.stop()


@dataclass(frozen=True, slots=True)
class CpuSplit:
    """CPU nanoseconds so far: the whole process, the model slot's threads, this thread."""

    process_ns: int
    slot_ns: int
    caller_ns: int

    def outside_slot_ns(self, earlier: CpuSplit) -> int:
        """CPU since ``earlier`` of every thread but the slot's and the caller (capture)."""
        process = self.process_ns - earlier.process_ns
        return max(
            0, process - (self.slot_ns - earlier.slot_ns) - (self.caller_ns - earlier.caller_ns)
        )


def cpu_split(slot_threads: list[int]) -> CpuSplit:
    """Read the CPU clocks; zeros where threads' clocks cannot be read (not POSIX)."""
    if not hasattr(time, "pthread_getcpuclockid"):
        return CpuSplit(0, 0, 0)
    slot = 0
    for ident in slot_threads:
        try:
            slot += time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
        except OSError:  # the thread ended between listing and reading
            continue
    return CpuSplit(time.process_time_ns(), slot, time.thread_time_ns())


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Alternate raw and pipeline rounds so both see the same background load."""
    load_before = load_average()
    rounds = max(1, settings.rounds, round(settings.seconds / (2 * ROUND_S)))
    share = max(0.25, settings.seconds / (2 * rounds))
    raw = RawLoop(settings)
    tally = PipelineTally()
    frames = load_frames(settings.clip) if settings.source == "replay" else []
    for _ in range(rounds):
        raw.run(share)
        opener = None
        if frames:
            # Faster than the model, but without decoding frames only to drop them.
            fps = settings.replay_fps or REPLAY_SPEEDUP * raw.ips
            opener = functools.partial(ReplaySource, frames, fps)
        pipeline_round(settings, share, tally, opener)
    raw_result, pipe = raw.result(), tally.result()
    current, peak = rss_mb()
    ratios = round_ratios(raw.round_ips, tally.round_ips)
    return {
        "model": str(settings.model),
        "threads": settings.threads,
        "cores": os.cpu_count() or 0,
        "overlap_stages": settings.overlap_stages,
        "backend": settings.backend,
        "input_shape": raw_result.pop("input_shape"),
        "rounds": rounds,
        "runtime": raw_result["runtime"],
        "raw": raw_result,
        "pipeline": pipe,
        "ratio": round(pipe["ips"] / raw_result["ips"], 4) if raw_result["ips"] else 0.0,
        # Each pipeline round against the raw round just before it: load that comes and
        # goes shifts whole rounds, so the median of the pairs is steadier than the total.
        "ratios": ratios,
        "ratio_median": round(median(ratios), 4) if ratios else 0.0,
        "ratio_spread": round(max(ratios) - min(ratios), 4) if ratios else 0.0,
        # CPU time of the slot's own threads per inferred frame, invoke excluded: does not
        # grow with other load on the machine, unlike the ips figures.
        "overhead_cpu_us_per_frame": pipe["overhead_cpu_us"],
        # CPU per captured frame of every thread outside the slot: the capture thread and
        # the threads of its decoding library (FFmpeg's, GStreamer's), one value per round.
        "capture_decode_ms": summarise(tally.capture_cpu_ms),
        "latency_ms": pipe["latency_ms"],
        "source": settings.source,
        "replay_fps": settings.replay_fps,  # null: 1.5x the raw rate
        "rss_mb": tally.rss_mb or current,
        "rss_peak_mb": peak,
        # Other work on the machine skews both figures; the ratio, taken side by side, less.
        "load_avg": {"before": load_before, "after": load_average()},
    }


def round_ratios(raw_ips: list[float], pipeline_ips: list[float]) -> list[float]:
    """Pipeline ips over the raw ips of the same round, round by round."""
    return [
        round(pipe / raw, 4) for raw, pipe in zip(raw_ips, pipeline_ips, strict=False) if raw > 0
    ]

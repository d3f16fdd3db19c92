"""Where a benchmark process's CPU goes, per thread, from /proc (issue 19.3, fourth session).

``snapshot()`` reads ``/proc/self/task/<tid>/schedstat`` (CPU nanoseconds and the number of
times the thread was put on a CPU) and ``status`` (voluntary and involuntary context
switches) for every Python thread; ``delta`` subtracts two snapshots and sums them by
thread kind (``main``, ``mqtt`` for paho's network thread, ``update-service``, ...), so the
device processes and the raw fan-out's subscribers report the same figures.

``count_paho()`` (only with ``BENCH_COUNTS=1``: it wraps three paho methods) counts the
network loop's ``select`` rounds, ``recv`` calls and bytes, and the messages dispatched,
and the garbage collector's runs per generation and their time (``gc.callbacks``).
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

Snapshot = dict[int, tuple[str, int, int, int, int, int]]
FIELDS = ("cpu_ns", "slices", "voluntary", "involuntary", "minflt")
PAHO_COUNTS: Counter[str] = Counter()


def _kind(name: str) -> str:
    if name.startswith("paho-mqtt-client"):
        return "mqtt"
    if name == "MainThread":
        return "main"
    return re.sub(r"[-_ ]?\d+$", "", name) or name


def _read(tid: int) -> tuple[int, int, int, int, int] | None:
    base = Path(f"/proc/self/task/{tid}")
    try:
        run_ns, _wait_ns, slices = (int(v) for v in (base / "schedstat").read_text().split()[:3])
        status = (base / "status").read_text()
        # stat: "pid (comm) state ppid ..."; minflt is the 10th field, 7th after the comm.
        minflt = int((base / "stat").read_text().rpartition(")")[2].split()[7])
    except (OSError, ValueError, IndexError):
        return None
    switches = dict(line.split(":", 1) for line in status.splitlines() if "ctxt_switches" in line)
    return (
        run_ns,
        slices,
        int(switches.get("voluntary_ctxt_switches", "0")),
        int(switches.get("nonvoluntary_ctxt_switches", "0")),
        minflt,
    )


def snapshot() -> Snapshot:
    out: Snapshot = {}
    for thread in threading.enumerate():
        tid = thread.native_id
        if tid is None:
            continue
        got = _read(tid)
        if got is not None:
            out[tid] = (_kind(thread.name), *got)
    return out


def delta(before: Snapshot, after: Snapshot) -> dict[str, dict[str, int]]:
    """Per thread kind: what each counter grew by (threads started since count from zero)."""
    sums: dict[str, dict[str, int]] = {}
    for tid, (kind, *now) in after.items():
        then = before.get(tid, (kind, 0, 0, 0, 0, 0))[1:]
        acc = sums.setdefault(kind, dict.fromkeys(FIELDS, 0))
        for field, a, b in zip(FIELDS, now, then, strict=True):
            acc[field] += a - b
    return sums


def add_up(docs: list[dict[str, dict[str, int]]], per: int) -> dict[str, dict[str, float]]:
    """Sum of several processes' ``delta``s, divided by ``per`` (devices or receivers)."""
    sums: dict[str, dict[str, float]] = {}
    for doc in docs:
        for kind, fields in doc.items():
            acc = sums.setdefault(kind, dict.fromkeys(FIELDS, 0.0))
            for field in FIELDS:
                acc[field] += fields.get(field, 0)
    out: dict[str, dict[str, float]] = {}
    for kind, total in sorted(sums.items()):
        out[kind] = {
            "cpu_ms": round(total["cpu_ns"] / 1e6 / per, 2),
            **{f: round(total[f] / per, 1) for f in FIELDS[1:]},
        }
    return out


def add_counts(docs: list[dict[str, int]], per: int) -> dict[str, float]:
    sums: Counter[str] = Counter()
    for doc in docs:
        sums.update(doc)
    return {key: round(value / per, 1) for key, value in sorted(sums.items())}


def count_paho() -> None:
    """Count paho's network loop rounds, recv calls and bytes, messages (env-enabled)."""
    if os.environ.get("BENCH_COUNTS") != "1":
        return
    _count_gc()
    client_cls = mqtt.Client
    recv, loop, handle = (
        getattr(client_cls, n) for n in ("_sock_recv", "_loop", "_handle_publish")
    )

    def counted_recv(self: Any, bufsize: int) -> bytes:
        data: bytes = recv(self, bufsize)
        PAHO_COUNTS["recv_calls"] += 1
        PAHO_COUNTS["recv_bytes"] += len(data)
        if len(data) < bufsize:
            PAHO_COUNTS["recv_short"] += 1
        return data

    def counted_loop(self: Any, timeout: float = 1.0) -> Any:
        PAHO_COUNTS["loop_rounds"] += 1
        return loop(self, timeout)

    def counted_handle(self: Any) -> Any:
        PAHO_COUNTS["publishes_in"] += 1
        return handle(self)

    setattr(client_cls, "_sock_recv", counted_recv)  # noqa: B010 - paho's private methods
    setattr(client_cls, "_loop", counted_loop)  # noqa: B010
    setattr(client_cls, "_handle_publish", counted_handle)  # noqa: B010


def _count_gc() -> None:
    started: list[int] = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time_ns()
            return
        gen = info.get("generation", -1)
        key = f"gc{gen}"
        PAHO_COUNTS[key] += 1
        PAHO_COUNTS[f"{key}_us"] += (time.thread_time_ns() - started[0]) // 1000

    gc.callbacks.append(on_gc)


def paho_counts() -> dict[str, int]:
    return dict(PAHO_COUNTS)


def counts_since(start: dict[str, int]) -> dict[str, int]:
    """What each count grew by since ``start`` (a ``paho_counts()`` taken earlier)."""
    return {key: value - start.get(key, 0) for key, value in PAHO_COUNTS.items()}

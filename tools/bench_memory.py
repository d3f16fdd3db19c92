#!/usr/bin/env python3
"""Memory of the running daemon: RSS and PSS of `edge-agent run` over time, and where it goes.

Starts a real Mosquitto on 127.0.0.1 and the real daemon (one camera on the sample clip,
the sample BlazeFace model), samples ``/proc/PID/smaps_rollup`` every ``--interval-s``
and, at the end, groups ``/proc/PID/smaps`` by what is mapped (OpenCV, LiteRT, NumPy's
BLAS, Python, the heap, anonymous arenas, thread stacks). A second, separate process
measures what each import costs on its own (``--imports``), since the daemon's own
number cannot say which module brought which pages.

    python tools/bench_memory.py --seconds 300 --json

Prints figures only; it asserts nothing (targets live in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.assets import find_asset  # noqa: E402 - after sys.path
from tests.support.daemon_proc import door_camera  # noqa: E402 - the tests' sample camera
from tests.support.mosquitto import MosquittoBroker  # noqa: E402 - a real broker for the run

KB_PER_MB = 1024.0
# Mapped-file name patterns → group, first match wins; anonymous mappings are grouped apart.
GROUPS: tuple[tuple[str, str], ...] = (
    (r"opencv|cv2|libav|libsw|libpng|libjpeg|libtiff|libwebp|libopenjp", "opencv"),
    (r"litert|tflite|tensorflow|_pywrap", "litert"),
    (r"onnxruntime", "onnxruntime"),
    (r"openblas|numpy|scipy_openblas|libgfortran|libquadmath", "numpy"),
    (r"pydantic", "pydantic"),
    (r"libcrypto|libssl|cryptography|_rust", "cryptography/ssl"),
    (r"sqlite", "sqlite"),
    (r"libpython|/bin/python|python3\.\d+/lib-dynload", "python"),
    (r"\.tflite$|\.onnx$", "model files"),
    (r"\.so", "other shared libraries"),
)
SMAPS_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")
IMPORTS = (
    "numpy",
    "cv2",
    "ai_edge_litert.interpreter",
    "pydantic",
    "structlog",
    "paho.mqtt.client",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "sqlite3",
    "rich",
    "agent.config",
    "agent.pipeline.runner",
    "agent.uplink.link",
    "agent.update.transfer.wiring",
    "agent.daemon.supervisor",
)


# Runs the daemon under tracemalloc and dumps the Python heap by file on SIGUSR1: the part of
# the anonymous memory that Python objects hold, apart from native arenas (LiteRT, OpenCV).
TRACED_RUN = """
import json, signal, sys, tracemalloc
tracemalloc.start()
OUT, CONFIG = sys.argv[1], sys.argv[2]
def dump(*_):
    stats = tracemalloc.take_snapshot().statistics("filename")
    top = [{"file": s.traceback[0].filename, "mb": round(s.size / 1048576, 2)} for s in stats[:12]]
    total = sum(s.size for s in stats) / 1048576
    with open(OUT, "w") as out:
        json.dump({"python_heap_mb": round(total, 1), "top": top}, out)
signal.signal(signal.SIGUSR1, dump)
sys.argv = ["edge-agent", "run", "--config", CONFIG]
from agent.cli.main import main
sys.exit(main())
"""


def rollup(pid: int) -> dict[str, float]:
    """RSS, PSS and their parts in MB from ``/proc/PID/smaps_rollup``."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="ascii").splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[name.strip()] = int(parts[0]) / KB_PER_MB
    return fields


def group_of(path: str) -> str:
    if not path:
        return "anonymous (heap arenas, numpy buffers, thread stacks)"
    if path.startswith("["):
        return {"[heap]": "heap (brk)", "[stack]": "main stack"}.get(path, "kernel/other")
    for pattern, group in GROUPS:
        if re.search(pattern, path, re.IGNORECASE):
            return group
    return "other files"


def breakdown(pid: int) -> dict[str, dict[str, float]]:
    """``/proc/PID/smaps`` summed per group: rss_mb, pss_mb (largest PSS first)."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: {"rss_mb": 0.0, "pss_mb": 0.0})
    group = "kernel/other"
    for line in (
        Path(f"/proc/{pid}/smaps").read_text(encoding="utf-8", errors="replace").split("\n")
    ):
        header = SMAPS_HEADER.match(line)
        if header:
            group = group_of(header.group(1).strip())
        elif line.startswith(("Rss:", "Pss:")):
            key = "rss_mb" if line.startswith("Rss:") else "pss_mb"
            sums[group][key] += int(line.split()[1]) / KB_PER_MB
    ordered = sorted(sums.items(), key=lambda item: -item[1]["pss_mb"])
    return {name: {k: round(v, 1) for k, v in figures.items()} for name, figures in ordered}


def thread_count(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/task").iterdir())


def import_costs() -> list[dict[str, Any]]:
    """RSS growth per import, in import order, in a fresh interpreter (cumulative)."""
    script = textwrap.dedent(
        f"""
        import importlib, json, sys
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        out, last = [], rss()
        out.append({{"module": "python", "rss_mb": round(last, 1), "added_mb": round(last, 1)}})
        for name in {list(IMPORTS)!r}:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                out.append({{"module": name, "error": str(exc)}})
                continue
            now = rss()
            added = round(now - last, 1)
            out.append({{"module": name, "rss_mb": round(now, 1), "added_mb": added}})
            last = now
        json.dump(out, sys.stdout)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )  # cwd first on sys.path: this checkout's agent
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def write_config(directory: Path, broker_url: str) -> Path:
    clip = find_asset("clips/sample.mp4")
    model = find_asset("models/face_detection_short_range.tflite")
    if clip is None or model is None:
        sys.exit("bench_memory: sample clip or model missing (run tools/fetch_assets.py)")
    config = directory / "agent.toml"
    # Defaults everywhere but the camera and model: the daemon as a user would run it.
    head = textwrap.dedent(
        f"""
        [device]
        id = "mem-001"
        [mqtt]
        url = "{broker_url}"
        [storage]
        state_dir = "{directory / "state"}"
        [control]
        socket_path = "{directory / "run" / "control.sock"}"
        """
    )
    config.write_text(head + door_camera(clip, model), encoding="utf-8")
    return config


def _python_heap(pid: int, traced: Path) -> dict[str, Any] | None:
    os.kill(pid, signal.SIGUSR1)
    for _ in range(600):  # a snapshot of a traced heap takes seconds on a busy board
        time.sleep(0.2)
        if traced.exists() and traced.stat().st_size:
            result: dict[str, Any] = json.loads(traced.read_text(encoding="utf-8"))
            return result
    _print_daemon_log(traced.parent)
    return None


def _print_daemon_log(directory: Path) -> None:
    """The end of the daemon's log (its stderr), for a run that went wrong."""
    log = directory / "daemon.log"
    sys.stderr.write(log.read_text(encoding="utf-8", errors="replace")[-2000:])


def run_daemon(seconds: float, interval_s: float, *, trace: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        directory = Path(tmp)
        broker = MosquittoBroker(directory / "broker")
        broker.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
        # Measure this checkout's agent, whatever is installed; keep the rest of the path
        # (dependencies installed with --target, as on a borrowed machine).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        config = write_config(directory, broker.url)
        traced = directory / "tracemalloc.json"
        argv = [sys.executable, "-m", "agent", "run", "--config", str(config)]
        if trace:
            argv = [sys.executable, "-c", TRACED_RUN, str(traced), str(config)]
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(directory / "daemon.log").open("wb"),
            cwd=directory,
        )
        samples: list[dict[str, float]] = []
        started = time.monotonic()
        try:
            while time.monotonic() - started < seconds:
                time.sleep(interval_s)
                if proc.poll() is not None:
                    _print_daemon_log(directory)
                    sys.exit(f"bench_memory: the daemon exited with {proc.returncode}")
                figures = rollup(proc.pid)
                samples.append(
                    {
                        "t_s": round(time.monotonic() - started, 1),
                        "rss_mb": round(figures.get("Rss", 0.0), 1),
                        "pss_mb": round(figures.get("Pss", 0.0), 1),
                        "anon_mb": round(figures.get("Anonymous", 0.0), 1),
                    }
                )
            parts = breakdown(proc.pid)
            threads = thread_count(proc.pid)
            python_heap = _python_heap(proc.pid, traced) if trace else None
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            broker.stop()
    last = samples[-1] if samples else {"rss_mb": 0.0, "pss_mb": 0.0}
    return {
        "seconds": seconds,
        "rss_mb": last["rss_mb"],
        "pss_mb": last["pss_mb"],
        "rss_max_mb": max((s["rss_mb"] for s in samples), default=0.0),
        "threads": threads,
        "breakdown": parts,
        **({"tracemalloc": python_heap} if trace else {}),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the daemon runs")
    parser.add_argument("--interval-s", type=float, default=10.0, help="sampling period")
    parser.add_argument("--imports", action="store_true", help="also measure each import alone")
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the daemon under tracemalloc (slower, larger) and report the Python heap",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    result = run_daemon(args.seconds, args.interval_s, trace=args.tracemalloc)
    if args.imports:
        result["imports"] = import_costs()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"edge-agent run after {args.seconds:.0f} s: RSS {result['rss_mb']} MB, "
        f"PSS {result['pss_mb']} MB (max RSS {result['rss_max_mb']} MB), "
        f"{result['threads']} threads"
    )
    print(f"{'mapped':<58} {'RSS MB':>8} {'PSS MB':>8}")
    for name, figures in result["breakdown"].items():
        print(f"{name:<58} {figures['rss_mb']:>8.1f} {figures['pss_mb']:>8.1f}")
    if traced := result.get("tracemalloc"):
        print(f"python heap (tracemalloc): {traced['python_heap_mb']} MB; largest by file:")
        for row in traced["top"]:
            print(f"  {row['mb']:>6.2f} MB  {row['file']}")
    for row in result.get("imports", []):
        if "error" in row:
            print(f"import {row['module']:<50} not importable: {row['error']}")
        else:
            print(f"import {row['module']:<50} +{row['added_mb']:>6.1f} MB (total {row['rss_mb']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

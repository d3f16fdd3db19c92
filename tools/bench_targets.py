#!/usr/bin/env python3
"""Issue 19's performance targets, each measured by its own benchmark, in one run.

Runs, one after the other and never overlapping (each would slow the next):

* ``edge-agent bench`` fed faster than the model (``saturated``) and at 30 frames/s
  (``camera``): ``overhead_cpu_us_per_frame`` p50 and, saturated, ``ratio_median``;
* ``tools/bench_memory.py``: the running daemon's ``rss_mb`` at the end of the run;
* ``tools/bench_transfer.py fleet`` for each ``--devices``: ``fanout_ratio`` and
  ``egress_per_bundle``; ``tools/bench_transfer.py e2e --mb 50``: ``share_of_raw_qos1``;

each after the cores went idle again (or 30 s passed), and prints one table: target,
every run's figure, the median, and whether the median meets the target, with the
machine it ran on (cores, CPU, idle share and load before and after each run). Made
for a quiet machine that a session only borrows for minutes: one command, ``--quick``
for a short budget (``tools/device_targets.sh`` runs it there).

    python tools/bench_targets.py                 # ~20 min on 2 cores
    python tools/bench_targets.py --quick          # ~6 min: 2 runs, N = 50 and 100
    python tools/bench_targets.py --json > figures.json

Benchmarks print figures; nothing here is asserted by a test (the verdict logic is).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETTLE_MAX_S = 30.0  # before each run, wait at most this long for idle cores


@dataclass(frozen=True)
class Target:
    """One figure of one benchmark's JSON, and the bound the issue sets on it."""

    name: str
    bench: str  # key of BENCHES
    path: tuple[str, ...]  # where the figure is in that benchmark's JSON
    bound: float
    at_most: bool  # True: the figure must be <= bound; False: >= bound


@dataclass
class Row:
    target: Target
    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def meets(self, value: float) -> bool:
        bound = self.target.bound
        return value <= bound if self.target.at_most else value >= bound

    @property
    def verdict(self) -> str:
        """``met`` / ``not met`` by the median; ``no figure`` when no run gave one."""
        median = self.median
        if median is None:
            return "no figure"
        return "met" if self.meets(median) else "not met"

    @property
    def runs_met(self) -> int:
        return sum(self.meets(v) for v in self.values)


def figure(document: dict[str, Any], path: Sequence[str]) -> float | None:
    """The number at ``path`` in a benchmark's JSON, or None where it is absent."""
    node: Any = document
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def collect(targets: Sequence[Target], runs: dict[str, list[dict[str, Any]]]) -> list[Row]:
    """Each target's figure from every run of its benchmark (a run that failed: its error)."""
    rows = []
    for target in targets:
        row = Row(target)
        for document in runs.get(target.bench, []):
            if "error" in document:
                row.errors.append(str(document["error"]))
                continue
            value = figure(document, target.path)
            if value is None:
                row.errors.append(f"no {'.'.join(target.path)} in the output")
            else:
                row.values.append(value)
        rows.append(row)
    return rows


def targets_for(devices: Sequence[int]) -> list[Target]:
    overhead = ("overhead_cpu_us_per_frame", "p50")
    rows = [
        Target("overhead µs/frame p50, saturated", "saturated", overhead, 100.0, at_most=True),
        Target("overhead µs/frame p50, 30 fps", "camera", overhead, 100.0, at_most=True),
        Target(
            "ratio_median (pipeline / raw ips)", "saturated", ("ratio_median",), 0.97, at_most=False
        ),
        Target("daemon rss_mb", "memory", ("rss_mb",), 120.0, at_most=True),
    ]
    for n in devices:
        rows += [
            Target(f"fanout_ratio, N = {n}", f"fleet{n}", ("fanout_ratio",), 1.5, at_most=True),
            Target(
                f"egress_per_bundle, N = {n}",
                f"fleet{n}",
                ("egress_per_bundle",),
                1.1,
                at_most=True,
            ),
        ]
    rows.append(
        Target("e2e share of raw QoS 1, 50 MB", "e2e", ("share_of_raw_qos1",), 0.5, at_most=False)
    )
    return rows


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The command of each benchmark (run from a scratch folder, with this interpreter)."""
    py = sys.executable
    bench = [py, "-m", "agent", "bench", "--threads", "1", "--json"]
    transfer = [py, str(REPO / "tools" / "bench_transfer.py")]
    memory_s = str(args.memory_s)
    out = {
        "saturated": [*bench, "--seconds", str(args.bench_s)],
        "camera": [*bench, "--fps", "30", "--seconds", "20", "--rounds", "2"],
        "memory": [py, str(REPO / "tools" / "bench_memory.py"), "--json", "--seconds", memory_s],
        "e2e": [*transfer, "e2e", "--mb", "50", "--json"],
    }
    for n in args.devices:
        out[f"fleet{n}"] = [*transfer, "fleet", "--devices", str(n), "--mb", "10", "--json"]
    return out


def run_one(argv: list[str], cwd: Path, timeout_s: float) -> dict[str, Any]:
    """One benchmark run: its JSON, or ``{"error": ...}`` naming why there is none."""
    env = dict(os.environ)
    # The checkout's agent, whichever folder the benchmark runs from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"ran past {timeout_s:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:200]}"}
    try:
        document = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": "its output is not one JSON document"}
    return document if isinstance(document, dict) else {"error": "its JSON is not an object"}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "commit": commit or "unknown",
        "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    }


def cpu_idle_fraction(window_s: float = 1.0) -> float | None:
    """Share of all cores' time idle over ``window_s`` (/proc/stat); None where unreadable."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        ticks = [int(f) for f in fields]
        return ticks[3] + (ticks[4] if len(ticks) > 4 else 0), sum(ticks)  # idle + iowait

    first = sample()
    time.sleep(window_s)
    second = sample()
    if first is None or second is None or second[1] <= first[1]:
        return None
    return (second[0] - first[0]) / (second[1] - first[1])


def settle(max_wait_s: float, idle_at_least: float = 0.9) -> tuple[float, float | None]:
    """Wait (up to ``max_wait_s``) for the cores to go idle after the last run; the wait and
    the idle share last seen. A fleet run leaves hundreds of processes exiting."""
    start = time.monotonic()
    while True:
        idle = cpu_idle_fraction()
        waited = time.monotonic() - start
        if idle is None or idle >= idle_at_least or waited >= max_wait_s:
            return waited, idle


def run_all(
    plan: dict[str, list[str]],
    repeat: int,
    timeout_s: float,
    say: Callable[[str], None],
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Every benchmark ``repeat`` times, round robin (a slow minute hits all of them)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    log: list[dict[str, Any]] = []
    once = {"memory"}  # five minutes each: once is the measure
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as scratch:
        for round_no in range(repeat):
            for name, argv in plan.items():
                if name in once and round_no > 0:
                    continue
                waited_s, idle = settle(SETTLE_MAX_S)
                load_before = os.getloadavg()[0]
                started = dt.datetime.now(dt.UTC).strftime("%H:%M:%S")
                say(f"{started} {name} (run {round_no + 1}) ...")
                document = run_one(argv, Path(scratch), timeout_s)
                runs[name].append(document)
                log.append(
                    {
                        "bench": name,
                        "run": round_no + 1,
                        "started_utc": started,
                        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                        "idle_before": None if idle is None else round(idle, 2),
                        "settled_s": round(waited_s, 1),
                        "error": document.get("error"),
                    }
                )
    return runs, log


def markdown(rows: Sequence[Row]) -> str:
    lines = [
        "| target | bound | runs | median | runs meeting it | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        sign = "≤" if row.target.at_most else "≥"
        values = ", ".join(f"{v:g}" for v in row.values) or "-"
        if row.errors:
            values += f" ({len(row.errors)} failed: {row.errors[0]})"
        median = "-" if row.median is None else f"{row.median:g}"
        lines.append(
            f"| {row.target.name} | {sign} {row.target.bound:g} | {values} | {median} "
            f"| {row.runs_met} of {len(row.values)} | **{row.verdict}** |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each benchmark")
    parser.add_argument(
        "--devices",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[50, 100, 200],
        help="fleet sizes, comma-separated",
    )
    parser.add_argument("--memory-s", type=float, default=300.0, help="daemon run time")
    parser.add_argument("--bench-s", type=float, default=10.0, help="saturated bench time")
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per benchmark run")
    parser.add_argument("--quick", action="store_true", help="2 runs, N = 50,100, 60 s memory")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--json-out", type=Path, help="also write that JSON document here")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.devices, args.memory_s = 2, [50, 100], 60.0
    facts = machine()
    runs, log = run_all(
        commands(args), args.repeat, args.timeout_s, lambda s: print(s, file=sys.stderr)
    )
    facts["ended_utc"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    rows = collect(targets_for(args.devices), runs)
    out = {
        "machine": facts,
        "runs": log,
        "targets": [
            {
                "name": r.target.name,
                "bound": r.target.bound,
                "at_most": r.target.at_most,
                "values": r.values,
                "median": r.median,
                "runs_met": r.runs_met,
                "errors": r.errors,
                "verdict": r.verdict,
            }
            for r in rows
        ],
    }
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"machine: {json.dumps(facts)}")
        for entry in log:
            print(f"  {json.dumps(entry)}")
        print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

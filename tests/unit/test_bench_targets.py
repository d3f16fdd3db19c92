"""The targets runner reads each benchmark's own JSON and judges the median, both directions.

No timing is asserted: the figures below are made up, the verdicts are what is tested.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tools.bench_targets import collect, figure, markdown, run_one, targets_for


def _bench(p50: float, ratio: float) -> dict[str, object]:
    return {"overhead_cpu_us_per_frame": {"p50": p50, "p95": p50 * 2}, "ratio_median": ratio}


def test_figure_follows_the_path_and_refuses_what_is_not_a_number() -> None:
    document = {"a": {"b": 3}, "flag": True, "text": "7"}
    assert figure(document, ("a", "b")) == 3.0
    assert figure(document, ("a", "c")) is None
    assert figure(document, ("flag",)) is None  # a bool is not a figure
    assert figure(document, ("text",)) is None


def test_median_decides_and_each_bound_has_its_direction() -> None:
    runs = {
        "saturated": [_bench(90, 0.96), _bench(140, 0.98), _bench(95, 0.975)],
        "camera": [_bench(400, 0.03)],
        "memory": [{"rss_mb": 121.0}],
        "fleet50": [{"fanout_ratio": 1.4, "egress_per_bundle": 1.001}],
        "e2e": [{"share_of_raw_qos1": 0.5}],
    }
    rows = {row.target.name: row for row in collect(targets_for([50]), runs)}
    overhead = rows["overhead µs/frame p50, saturated"]
    assert overhead.values == [90.0, 140.0, 95.0]
    assert overhead.median == 95.0
    assert overhead.verdict == "met"
    assert overhead.runs_met == 2
    ratio = rows["ratio_median (pipeline / raw ips)"]
    assert ratio.verdict == "met"  # median 0.975 >= 0.97, though one run was below
    assert ratio.runs_met == 2
    assert rows["overhead µs/frame p50, 30 fps"].verdict == "not met"
    assert rows["daemon rss_mb"].verdict == "not met"
    assert rows["fanout_ratio, N = 50"].verdict == "met"
    assert rows["egress_per_bundle, N = 50"].verdict == "met"
    assert rows["e2e share of raw QoS 1, 50 MB"].verdict == "met"  # the bound itself meets it


def test_failed_runs_are_named_and_a_target_without_figures_says_so() -> None:
    runs = {
        "saturated": [{"error": "exit 2: no model"}, _bench(80, 0.99)],
        "fleet100": [{"error": "ran past 900 s"}],
    }
    rows = {row.target.name: row for row in collect(targets_for([100]), runs)}
    overhead = rows["overhead µs/frame p50, saturated"]
    assert overhead.values == [80.0]
    assert overhead.errors == ["exit 2: no model"]
    fanout = rows["fanout_ratio, N = 100"]
    assert fanout.verdict == "no figure"
    assert rows["e2e share of raw QoS 1, 50 MB"].verdict == "no figure"  # never ran
    table = markdown(list(rows.values()))
    assert "| fanout_ratio, N = 100 | ≤ 1.5 | - (1 failed: ran past 900 s) | - |" in table
    assert "**no figure**" in table


def test_a_run_that_fails_or_prints_no_json_gives_its_reason(tmp_path: Path) -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit('no broker found')"]
    assert run_one(failing, tmp_path, 30) == {"error": "exit 1: no broker found"}
    chatty = [sys.executable, "-c", "print('figures: 3')"]
    assert run_one(chatty, tmp_path, 30) == {"error": "its output is not one JSON document"}
    good = [sys.executable, "-c", "import json; print(json.dumps({'rss_mb': 99}))"]
    assert run_one(good, tmp_path, 30) == {"rss_mb": 99}

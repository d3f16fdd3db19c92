"""DiagReport: exit codes, the phone summary code, JSON shape, and the runner's guard rails."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from agent.config import load_config
from agent.diag.report import CheckResult, DiagReport, Status, fail, ok, summary_code, warn
from agent.diag.runner import DiagOptions, guarded, matches, run_checks, select


def test_exit_code_is_worst_status():
    assert DiagReport((ok("config", "x"), ok("disk", "y"))).exit_code == 0
    assert DiagReport((ok("config", "x"), warn("clock", "y", "h"))).exit_code == 1
    assert DiagReport((warn("clock", "y", "h"), fail("disk", "z", "h"))).exit_code == 2
    assert DiagReport(()).exit_code == 0


def test_summary_code_lists_fail_then_warn_letters():
    results = [
        fail("disk", "full", "h"),
        fail("model:detector", "gone", "h"),
        fail("model:other", "gone", "h"),
        warn("clock", "no ntp", "h"),
        warn("camera:door", "slow", "h"),
        ok("config", "fine"),
    ]
    assert summary_code(results) == "2-DM-KV"
    assert summary_code([ok("config", "x")]) == "0-0-0"
    assert summary_code([warn("systemd", "x", "h"), warn("tls", "y", "h")]) == "1-0-ST"
    assert summary_code([fail("something-new", "x", "h")]) == "2-X-0"


def test_json_shape_round_trips():
    report = DiagReport((ok("config", "fine"), warn("tls", "plaintext", "use mqtts", port=1883)))
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["checks"][1] == {
        "name": "tls",
        "status": "warn",
        "detail": "plaintext",
        "hint": "use mqtts",
        "data": {"port": 1883},
    }
    assert doc["summary"]["code"] == "1-0-T"
    assert doc["summary"]["exit_code"] == 1
    assert doc["summary"]["counts"] == {"ok": 1, "warn": 1, "fail": 0}
    again = DiagReport.from_json(doc)
    assert again.checks == report.checks
    assert again.source == "daemon"


def test_a_crashing_check_becomes_a_fail():
    def broken() -> CheckResult:
        raise KeyError("surprise")

    result = guarded("thermal", broken)
    assert result.status is Status.FAIL
    assert "KeyError" in result.detail
    assert "surprise" in result.detail


def test_selection_by_group_prefix_and_exact_name():
    names = ("config", "camera:door", "camera:yard", "broker")
    planned = [(n, partial(ok, n, "")) for n in names]
    chosen, unknown = select(planned, ["camera"])
    assert [n for n, _ in chosen] == ["camera:door", "camera:yard"]
    chosen, unknown = select(planned, ["camera:yard", "nope"])
    assert [n for n, _ in chosen] == ["camera:yard"]
    assert unknown == ["nope"]
    assert not matches("camera:door", "camera:yard")
    assert not matches("broker", "camera")


def test_run_checks_reports_unknown_names_and_keeps_order(write_config, tmp_path: Path, clean_env):
    state = tmp_path / "state"
    state.mkdir()
    path = write_config(f'[storage]\nstate_dir = "{state}"\n')
    report = run_checks(load_config(path), ["disk", "config", "bogus"], options=DiagOptions())
    assert [c.name for c in report.checks] == ["config", "disk", "bogus"]
    bogus = report.checks[-1]
    assert bogus.status is Status.FAIL
    assert "camera" not in bogus.hint  # no cameras configured, so none offered
    assert "disk" in bogus.hint


@pytest.mark.parametrize("status", list(Status))
def test_status_values_are_contract_strings(status: Status):
    assert str(status) in ("ok", "warn", "fail")

"""The console's pure parts: chart samples, table filters and sorting, login, halt text,
command-line refusals, and the vendored front-end files against their record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent.errors import AgentError
from agent.fleet.console.auth import PasswordCheck, Sessions, is_loopback
from agent.fleet.console.cli import login_password, parse_listen
from agent.fleet.console.rollouts import halt_text
from agent.fleet.console.series import chart_data, sample_of
from agent.fleet.console.state import FleetState
from agent.fleet.console.views import select, table_row
from agent.fleet.track import DeviceState

VENDOR = Path(__file__).resolve().parents[2] / "agent" / "fleet" / "console" / "static" / "vendor"

STATS = {
    "ts": 1000.0,
    "cameras": {"door": {"capture_fps": 15.0, "inferred_fps": 14.5, "dropped_fps": 0.5}},
    "models": {
        "detector": {
            "inference_ms": {"p50": 7.5, "p95": 9.0},
            "e2e_ms": {"p50": 30.0},
            "preprocess_ms": {"p50": 1.5},
        }
    },
    "drift": {"detector": {"histogram_distance": 0.12, "drifted": False}},
    "process": {"rss_mb": 120.5, "cpu_percent": 40.0, "max_temperature_c": 61.0, "throttled": 0},
    "outbox": {"depth": 3, "dropped": {"queue_full": {"stats": 2}, "evicted": {"detection": 1}}},
}


def test_sample_of_a_stats_document_flattens_what_the_charts_draw():
    assert sample_of(STATS) == {
        "fps.door.capture": 15.0,
        "fps.door.inferred": 14.5,
        "fps.door.dropped": 0.5,
        "inference_ms.detector": 7.5,
        "latency_ms.detector": 30.0,
        "stage_ms.detector.preprocess": 1.5,
        "drift.detector": 0.12,
        "rss_mb": 120.5,
        "cpu_percent": 40.0,
        "temperature_c": 61.0,
        "throttled": 0.0,
        "outbox_depth": 3.0,
        "outbox_dropped": 3.0,
    }
    # Junk of the wrong types is left out, never a traceback.
    assert sample_of({"cameras": [1], "process": {"rss_mb": "a lot"}, "outbox": None}) == {}


def test_chart_data_is_uplot_shaped_with_gaps_as_null():
    points = [(1.0, {"cpu_percent": 10.0}), (2.0, {"cpu_percent": 20.0, "rss_mb": 5.0})]
    charts = chart_data(points)
    assert charts["cpu"]["data"] == [[1.0, 2.0], [10.0, 20.0]]
    assert charts["rss"]["data"] == [[1.0, 2.0], [None, 5.0]]
    assert "fps" not in charts


def test_state_keeps_history_bounded_by_age_and_count():
    now = [10_000.0]
    state = FleetState("ea/v1", window_s=60, max_points=5, clock=lambda: now[0])
    for i in range(8):
        doc = {"ts": now[0] - 100 + i * 20, "process": {"cpu_percent": float(i)}}
        state.on_message("ea/v1/d/cam-1/m/stats", json.dumps(doc).encode())
    # Older than 60 s dropped (i < 2 are 100 and 80 s old), at most 5 kept.
    assert state.charts("cam-1")["cpu"]["data"][1] == [3.0, 4.0, 5.0, 6.0, 7.0]
    # An empty retained message clears an op state; junk is counted, not stored.
    state.on_message("ea/v1/d/cam-1/op/ping/x", b'{"status": "successful", "ts": 1}')
    assert "ping/x" in state.devices()["cam-1"]["ops"]
    state.on_message("ea/v1/d/cam-1/op/ping/x", b"")
    assert state.devices()["cam-1"]["ops"] == {}
    state.on_message("ea/v1/d/cam-2/state", b"[1, 2]")
    assert state.ignored == 1
    assert "cam-2" not in state.devices()


def _row(device: str, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "device": device,
        "fleet": "f1",
        "online": True,
        "health": "ok",
        "alarms": [],
        "operation": None,
        "last_seen": 100.0,
        "active": {},
        "models": {},
        "health_failing": [],
        "health_doc": None,
    }
    return base | kw


def test_fleet_filters_and_sorting():
    rows = [
        _row("b", health="down"),
        _row("a", online=False, fleet="f2"),
        _row("c", alarms=["storage_low"], operation={"op": "model_update/x", "status": "failed"}),
    ]
    names = lambda chosen: [r["device"] for r in chosen]  # noqa: E731
    assert names(select(rows, "", "all", "device", descending=False)) == ["a", "b", "c"]
    assert names(select(rows, "", "all", "device", descending=True)) == ["c", "b", "a"]
    assert names(select(rows, "f1", "all", "health", descending=False)) == ["b", "c"]
    assert names(select(rows, "", "offline", "device", descending=False)) == ["a"]
    assert names(select(rows, "", "alarms", "device", descending=False)) == ["c"]
    assert names(select(rows, "", "failing_op", "nonsense", descending=False)) == ["c"]


def test_table_row_names_the_failing_component_and_versions():
    row = _row(
        "cam-1",
        health="degraded",
        health_failing=["camera:door"],
        health_doc={"components": {"camera:door": {"status": "degraded", "detail": "stalled"}}},
        active={"detector": {"manifest_version": 4, "release": 9}, "faces": {}},
        operation={"op": "model_update/d", "status": "failed", "reason": "hash_mismatch"},
    )
    shown = table_row(row, now_s=130.0)
    assert shown["failing"] == ["camera:door: stalled"]
    assert [m["text"] for m in shown["models"]] == ["v4 (release 9)", "as shipped"]
    assert shown["op"] == "model_update failed (hash_mismatch)"
    assert shown["last_seen"] == "30 s ago"


def test_halt_text_names_failures_silence_and_the_limit():
    states = {
        "a": DeviceState(status="successful"),
        "b": DeviceState(status="failed", reason="health_failed", detail="delegate failed"),
        "c": DeviceState(status="no_answer"),
    }
    text = halt_text("canary", states, 1)
    assert text is not None
    assert text.startswith("halt rule fired at stage canary: 1 failed (limit 1)")
    assert "1 no answer (c)" in text
    assert "b: health_failed (delegate failed)" in text
    assert halt_text("canary", {"a": DeviceState(status="successful")}, 1) is None


def test_password_is_kept_hashed_and_sessions_carry_csrf():
    check = PasswordCheck.of("s3cret-pass")
    assert check.matches("s3cret-pass")
    assert not check.matches("s3cret-pas")
    assert b"s3cret" not in check.digest
    sessions = Sessions(check)
    assert sessions.login("nope") is None
    session = sessions.login("s3cret-pass")
    assert session is not None
    assert sessions.allowed(sessions.get(session.token))
    assert session.csrf != session.token
    # Anonymous sessions exist for CSRF only: not allowed where a password is set.
    assert not sessions.allowed(sessions.new(user=False))
    sessions.end(session.token)
    assert sessions.get(session.token) is None


def test_listen_and_password_arguments(tmp_path):
    assert parse_listen("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:80") == ("::1", 80)
    with pytest.raises(AgentError, match="HOST:PORT"):
        parse_listen("host:http")
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(AgentError, match="file:PATH only"):
        login_password("hunter2hunter2")
    short = tmp_path / "pw"
    short.write_text("short\n")
    with pytest.raises(AgentError, match="8 characters"):
        login_password(f"file:{short}")


def test_console_refuses_to_listen_beyond_loopback_without_a_password(capsys):
    from agent.fleet.cli import main

    code = main(["console", "--broker", "mqtt://127.0.0.1:1", "--listen", "0.0.0.0:8780"])
    assert code != 0
    assert "--login-password" in capsys.readouterr().err


def test_vendored_front_end_files_match_their_record_and_carry_licences():
    record = json.loads((VENDOR / "VERSIONS.json").read_text())
    assert set(record) == {"htmx.org", "uplot"}
    for package in record.values():
        assert any(name.endswith("LICENSE") for name in package["files"])
        for name, digest in package["files"].items():
            assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name

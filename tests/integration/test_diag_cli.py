"""``edge-agent diag`` end to end: exit codes, JSON, the daemon path, and the redacted bundle."""

from __future__ import annotations

import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from agent.config import load_config
from agent.daemon.control import ControlServer
from agent.diag.bundle import write_bundle
from agent.diag.runner import DiagOptions, run_checks

PLANTED_PASSWORD = "planted-Pa55word-7731"
PLANTED_FILE_SECRET = "file-secret-QX81-do-not-ship"


@pytest.fixture
def device(tmp_path: Path, write_config, clean_env, sample_clip, short_range_model) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    key_pw = tmp_path / "key_password"
    key_pw.write_text(PLANTED_FILE_SECRET + "\n")
    return write_config(f"""
[device]
id = "cam-042"
[storage]
state_dir = "{state}"
min_free_mb = 1
[mqtt]
url = "mqtt://127.0.0.1:9"
username = "technician"
password = "{PLANTED_PASSWORD}"
key_password = "file:{key_pw}"
[control]
socket_path = "{tmp_path}/run/control.sock"
[[cameras]]
name = "door"
source = "file:{sample_clip}"
fps = 15
loop = true
[[models]]
slot = "detector"
path = "{short_range_model}"
""")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def test_json_report_and_exit_code(device: Path, capsys):
    code, out = run_cli(["diag", "--config", str(device), "--json", "disk", "broker"], capsys)
    doc = json.loads(out)  # one JSON object, nothing else on stdout
    assert code == 2
    assert [c["name"] for c in doc["checks"]] == ["disk", "broker"]
    assert {c["status"] for c in doc["checks"]} == {"ok", "fail"}
    assert doc["summary"]["code"] == "2-B-0"
    assert doc["summary"]["source"] == "local"


def test_not_a_tty_means_json(device: Path, capsys):
    code, out = run_cli(["diag", "--config", str(device), "config"], capsys)
    assert code == 0
    assert json.loads(out)["summary"]["code"] == "0-0-0"


def test_invalid_config_is_a_failed_check(write_config, clean_env, capsys):
    bad = write_config("[[cameras]]\nname = 'door'\nfps = -3\n")
    code, out = run_cli(["diag", "--config", str(bad), "--json", "config", "disk"], capsys)
    doc = json.loads(out)
    assert code == 2
    config = doc["checks"][0]
    assert config["name"] == "config"
    assert config["status"] == "fail"
    assert "cameras[0].fps" in config["detail"]


def test_human_table(device: Path):
    import io

    from agent.diag.render import render_table

    report = run_checks(load_config(device), ["disk", "broker"], options=DiagOptions())
    buf = io.StringIO()
    render_table(report, buf, width=160)
    text = buf.getvalue()
    assert "FAIL" in text
    assert "broker" in text
    assert "code 2-B-0" in text


@pytest.fixture
def daemon(device: Path) -> Iterator[dict[str, Any]]:
    """A real control socket answering like the daemon, with live stats for the camera."""
    loaded = load_config(device)
    live: dict[str, Any] = {
        "daemon": {"pid": 4242, "version": "0.1.0", "uptime_s": 12.0, "started_at": "x"},
        # The shapes agent.daemon.supervisor.Supervisor.status() answers with.
        "health": {
            "status": "ok",
            "components": {
                "camera:door": {"status": "ok", "detail": "14.8 fps"},
                "model:detector": {"status": "ok", "detail": "m.tflite on ai-edge-litert"},
            },
        },
        "stats": {
            "cameras": {"door": {"capture_fps": 14.8}},
            "models": {
                "detector": {
                    "runtime": {"name": "ai-edge-litert", "version": "2.3.0"},
                    "inference_ms": {"p50": 2.1, "p95": 3.4, "mean": 2.2, "n": 40.0},
                }
            },
        },
        "models": {"detector": {"release": 3, "runtime": "ai-edge-litert 2.3.0"}},
        "link": {"connected": True, "url": "mqtt://127.0.0.1:9"},
        "outbox": {"depth": 0},
    }
    seen: list[dict[str, Any]] = []

    def on_status(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **live}

    def on_diag(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        report = run_checks(loaded, req.get("checks") or None, live=live)
        return {"ok": True, "report": report.to_json()}

    stop = threading.Event()
    server = ControlServer(
        Path(loaded.config.control.socket_path), {"status": on_status, "diag": on_diag}, stop
    )
    server.start()
    yield {"live": live, "seen": seen}
    server.stop()


def test_running_daemon_answers_diag_without_opening_the_camera(device: Path, daemon, capsys):
    argv = ["diag", "--config", str(device), "--json", "camera", "model", "broker"]
    code, out = run_cli(argv, capsys)
    doc = json.loads(out)
    assert doc["summary"]["source"] == "daemon"
    assert daemon["seen"] == [{"op": "diag", "checks": ["camera", "model", "broker"]}]
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["model:detector"]["status"] == "ok"
    assert "ai-edge-litert 2.3.0" in checks["model:detector"]["detail"]
    assert "p95 3.4 ms" in checks["model:detector"]["detail"]
    assert checks["camera:door"]["status"] == "ok"
    assert checks["camera:door"]["data"]["live"] is True
    assert "14.8 fps" in checks["camera:door"]["detail"]
    assert checks["broker"]["status"] == "ok"  # the daemon's link, not a second connection
    assert code == 0
    daemon["live"]["link"]["connected"] = False
    daemon["live"]["stats"]["cameras"]["door"]["capture_fps"] = 0.0
    daemon["live"]["health"]["components"]["camera:door"] = {"status": "down", "detail": "stalled"}
    daemon["live"]["health"]["components"]["model:detector"]["status"] = "degraded"
    code, out = run_cli(argv, capsys)
    assert code == 2
    doc = json.loads(out)
    assert doc["summary"]["code"] == "2-BV-M"
    assert "stalled" in doc["checks"][0]["detail"]


def test_local_flag_bypasses_the_daemon(device: Path, daemon, capsys):
    code, out = run_cli(["diag", "--config", str(device), "--json", "--local", "disk"], capsys)
    assert json.loads(out)["summary"]["source"] == "local"
    assert daemon["seen"] == []
    assert code == 0


def bundle_texts(path: Path) -> dict[str, str]:
    with tarfile.open(path, "r:gz") as tar:
        return {
            m.name.split("/", 1)[1]: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def test_bundle_path_is_last_line_and_secrets_stay_out(device: Path, tmp_path: Path, capsys):
    out_dir = tmp_path / "bundles"
    code, out = run_cli(
        ["diag", "--config", str(device), "--bundle", str(out_dir), "config", "disk"], capsys
    )
    assert code == 0
    path = Path(out.strip().splitlines()[-1])
    assert path.parent == out_dir
    assert path.name.startswith("edge-agent-diag-cam-042-")
    assert path.name.endswith(".tar.gz")
    assert path.stat().st_mode & 0o077 == 0
    raw = path.read_bytes()
    texts = bundle_texts(path)
    assert set(texts) == {
        "checks.json",
        "config.json",
        "journal.log",
        "agent.log",
        "update_status.json",
        "outbox.json",
        "version.json",
    }
    everything = "\n".join(texts.values())
    for secret in (PLANTED_PASSWORD, PLANTED_FILE_SECRET):
        assert secret not in everything
        assert secret.encode() not in raw
    config = json.loads(texts["config.json"])["effective"]
    assert config["mqtt"]["password"] == "<redacted>"
    assert config["mqtt"]["username"] == "technician"
    assert json.loads(texts["checks.json"])["summary"]["code"] == "0-0-0"
    assert json.loads(texts["version.json"])["agent_version"]


def test_bundle_scrubs_secrets_that_leaked_into_logs(device: Path, tmp_path: Path):
    loaded = load_config(device)
    report = run_checks(loaded, ["config"])

    def leaky_journal(argv: list[str]) -> tuple[int, str]:
        assert argv[:3] == ["journalctl", "-u", "edge-agent"]
        return 0, f"connect user=technician pass={PLANTED_PASSWORD} key={PLANTED_FILE_SECRET}\n"

    path = write_bundle(tmp_path / "b", report, loaded, runner=leaky_journal)
    journal = bundle_texts(path)["journal.log"]
    assert "user=technician" in journal
    assert PLANTED_PASSWORD not in journal
    assert PLANTED_FILE_SECRET not in journal
    assert journal.count("<redacted>") == 2


def test_bundle_with_outbox_counts_rows_by_class(device: Path, tmp_path: Path):
    import sqlite3

    loaded = load_config(device)
    db = Path(loaded.config.storage.state_dir) / "outbox.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, cls INTEGER, topic TEXT)")
    conn.executemany(
        "INSERT INTO messages (cls, topic) VALUES (?, ?)", [(0, "a"), (1, "d"), (1, "d"), (2, "s")]
    )
    conn.execute("CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("INSERT INTO counters VALUES ('dropped_stats', 5)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    path = write_bundle(tmp_path / "b", run_checks(loaded, ["config"]), loaded)
    outbox = json.loads(bundle_texts(path)["outbox.json"])
    assert outbox["rows"]["messages"] == 4
    assert outbox["by_class"] == {"alarm": 1, "detection": 2, "stats": 1}
    assert outbox["counters"] == {"dropped_stats": 5}
    assert db.read_bytes() == before  # read-only

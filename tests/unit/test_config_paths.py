"""Issue 17.6: relative paths in a config file mean relative to the file; validate-config
checks that the files a config names are there."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli.main import main as agent_main
from agent.config import load_config

CONFIG = """
[device]
id = "cam-1"
[trust]
root = "trust/root.json"
[mqtt]
password = "file:secrets/mqtt"
[storage]
state_dir = "state"
[[cameras]]
name = "door"
source = "file:clips/door.mp4"
[[models]]
slot = "detector"
path = "models/face.tflite"
cameras = ["door"]
"""


@pytest.fixture
def folder(tmp_path: Path, clean_env, monkeypatch: pytest.MonkeyPatch) -> Path:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "agent.toml").write_text(CONFIG, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # as systemd (cwd /) or a technician in their home folder
    return conf


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_relative_paths_resolve_against_the_config_folder(folder: Path):
    cfg = load_config(folder / "agent.toml").config
    assert cfg.trust.root == str(folder / "trust/root.json")
    assert cfg.mqtt.password.get_secret_value() == f"file:{folder / 'secrets/mqtt'}"
    assert cfg.storage.state_dir == str(folder / "state")
    assert cfg.cameras[0].source == f"file:{folder / 'clips/door.mp4'}"
    assert cfg.models[0].path == str(folder / "models/face.tflite")


def test_relative_config_path_given_on_the_command_line(folder: Path, monkeypatch):
    monkeypatch.chdir(folder.parent)
    cfg = load_config(Path("conf/agent.toml")).config
    assert cfg.models[0].path == str(folder / "models/face.tflite")


def test_validate_config_checks_referenced_files(folder: Path, capsys):
    config = str(folder / "agent.toml")
    assert agent_main(["validate-config", config]) == 1
    err = capsys.readouterr().err
    assert f"{config}: invalid: 3 referenced file(s) missing" in err
    assert f"models[0].path: {folder / 'models/face.tflite'} does not exist" in err
    assert f"trust.root: {folder / 'trust/root.json'} does not exist" in err
    assert f"mqtt.password: {folder / 'secrets/mqtt'} does not exist" in err
    # A camera that may be plugged in later is a warning, not an error.
    assert "warning:" in err
    assert "cameras[0].source" in err
    for name in ("models/face.tflite", "trust/root.json", "secrets/mqtt"):
        touch(folder / name)
    assert agent_main(["validate-config", config]) == 0
    captured = capsys.readouterr()
    assert "valid" in captured.out
    assert "cameras[0].source" in captured.err
    assert "(a camera may appear later)" in captured.err
    touch(folder / "clips/door.mp4")
    assert agent_main(["validate-config", config]) == 0
    assert capsys.readouterr().err == ""

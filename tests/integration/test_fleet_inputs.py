"""Issue 17.8: `edge-fleet bundle create` refuses bad input cleanly; broker user/password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.fleet.bundle as bundle_mod
from agent.fleet.cli import main as fleet_main
from tests.support.mosquitto import MosquittoBroker, password_broker


def create(keys: Path, model: Path, out: Path, *extra: str) -> int:
    return fleet_main(
        [
            *("bundle", "create", "--model", str(model), "--slot", "detector"),
            *("--fleet", "f1", "--manifest-version", "1", "--release", "1"),
            *("--keys", str(keys), "--out", str(out), *extra),
        ]
    )


def test_missing_model_is_a_clear_error_and_leaves_nothing(keys, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert create(keys, tmp_path / "missing.tflite", out) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"edge-fleet: error: {tmp_path / 'missing.tflite'} does not exist"
    assert not out.exists()
    # An unknown model type, and a missing extra file: refused before anything is written.
    model = tmp_path / "m.bin"
    model.write_bytes(b"x")
    assert create(keys, model, out) == 1
    assert "unknown model type '.bin'" in capsys.readouterr().err
    assert not out.exists()


def test_failure_while_writing_removes_the_new_bundle_dir(
    keys, tmp_path, short_range_model, monkeypatch, capsys
):
    def broken(*_a: object, **_k: object) -> bytes:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_mod, "build_chunk_index", broken)
    out = tmp_path / "bundle"
    with pytest.raises(OSError, match="No space"):
        create(keys, short_range_model, out)
    assert not out.exists()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = password_broker(tmp_path, "ops", "s3cret")
    yield broker
    broker.stop()


@pytest.mark.broker
def test_username_and_password_file(secured, tmp_path, capsys):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n", encoding="utf-8")
    base = ["status", "--broker", secured.url, "--wait", "0.1", "--json"]
    assert fleet_main([*base, "--username", "ops", "--password", "s3cret"]) == 0
    assert fleet_main([*base, "--username", "ops", "--password", f"file:{secret}"]) == 0
    capsys.readouterr()
    assert fleet_main([*base, "--username", "ops", "--password", "wrong"]) != 0
    err = capsys.readouterr().err
    assert "did not accept us: CONNACK refused: Not authorized" in err

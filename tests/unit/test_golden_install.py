"""Golden cases through the real installer and ``edge-agent update install`` (no broker).

Real keys, real bundle, real model store on disk, the real sample model and photograph:
a case the staged model does not reproduce is refused before activation and leaves the
state directory's models exactly as they were; a matching case commits.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import Reason, UpdateError
from agent.fleet.golden import expected_cases
from agent.update.store.probe import OfflineProbe
from agent.update.store.slotmodel import SlotDetectors
from tests.support.update_fleet import Fleet, install_bundle, make_installer, snapshot


@pytest.fixture
def fleet(tmp_path: Path, short_range_model: Path) -> Fleet:
    return Fleet(tmp_path / "fleet", short_range_model)


def config(model: Path) -> AgentConfig:
    return AgentConfig(models=[ModelConfig(slot="detector", path=str(model), threshold=0.5)])


def cases(model: Path, photo: Path) -> list[dict[str, Any]]:
    found = expected_cases(config(model), "detector", model, [photo])
    assert found[0]["expect"]["detections"], "the photograph has a face"
    return found


def moved(found: list[dict[str, Any]], dx: int) -> list[dict[str, Any]]:
    wrong = copy.deepcopy(found)
    det = wrong[0]["expect"]["detections"][0]
    det["box"] = [v + dx for v in det["box"]]
    return wrong


def test_golden_mismatch_refused_before_activation_state_untouched(
    tmp_path: Path, fleet: Fleet, short_range_model: Path, images_dir: Path
) -> None:
    photo = images_dir / "astronaut.png"
    state = tmp_path / "state"
    probe = OfflineProbe(detectors=SlotDetectors(config(short_range_model)))
    installer = make_installer(state, fleet, probe=probe)
    v1 = fleet.bundle(manifest_version=1, release=1)
    assert install_bundle(installer, v1).outcome == "committed"
    before = snapshot(state / "models")
    golden = {"golden": moved(cases(short_range_model, photo), 60)}
    v2 = fleet.bundle(manifest_version=2, release=2, extra_files=[photo], trial=golden)
    with pytest.raises(UpdateError) as caught:
        install_bundle(installer, v2)
    assert caught.value.reason is Reason.GOLDEN_MISMATCH
    assert "golden case astronaut" in caught.value.message
    assert snapshot(state / "models") == before  # the staged copy is gone, current is v1
    # The same bundle again is refused at once (recorded as failed), a fixed one commits.
    with pytest.raises(UpdateError):
        install_bundle(installer, v2)
    good = {"golden": cases(short_range_model, photo)}
    v3 = fleet.bundle(manifest_version=3, release=3, extra_files=[photo], trial=good)
    result = install_bundle(installer, v3)
    assert result.outcome == "committed", result


def test_update_install_cli_runs_the_golden_cases(
    tmp_path: Path, fleet: Fleet, short_range_model: Path, images_dir: Path
) -> None:
    photo = images_dir / "astronaut.png"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [device]
        id = "cam-001"
        fleet = "default"
        [storage]
        state_dir = "{tmp_path / "state"}"
        [trust]
        root = "{fleet.root_path}"
        [[models]]
        slot = "detector"
        path = "{short_range_model}"
        threshold = 0.5
        """)
    )
    golden = {"golden": moved(cases(short_range_model, photo), 60)}
    bad = fleet.bundle(manifest_version=1, release=1, extra_files=[photo], trial=golden)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "update", "install", str(bad), "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "golden_mismatch" in proc.stderr
    assert "golden case astronaut" in proc.stderr
    assert "Traceback" not in proc.stderr

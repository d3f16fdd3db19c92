"""Remote config: the allow-list, list entries merged by name, and the trial's state on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config.allowlist import expand_lists, remote_issues
from agent.config.desired import (
    GOOD_NAME,
    accept_as_good,
    advance_trial,
    begin_trial,
    confirm_trial,
    desired_path,
    load_for_daemon,
    read_desired,
    revert_trial,
    reverted,
)
from agent.config.loader import DesiredLayer
from agent.daemon.config_trial import ConfigTrial, Verdict
from agent.daemon.remote_config import stored_version

FILE = {
    "cameras": [{"name": "door", "source": "file:/srv/door.mp4", "fps": 15}],
    "models": [{"slot": "detector", "path": "/m.tflite", "cameras": ["door"]}],
}


def keys(tree: dict) -> set[str]:
    return {i.key_path for i in remote_issues(tree, FILE, "mqtt:config v1")}


def test_allowed_tuning_passes() -> None:
    assert not keys(
        {
            "telemetry": {"stats_interval_s": 5},
            "logging": {"level": "debug"},
            "cameras": [{"name": "door", "fps": 5}],
            "models": [{"slot": "detector", "threshold": 0.7, "cameras": ["door"]}],
        }
    )


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({"mqtt": {"url": "mqtt://evil", "password": "x"}}, {"mqtt.url", "mqtt.password"}),
        ({"trust": {"root": "/tmp/root.json"}}, {"trust.root"}),
        ({"storage": {"state_dir": "/tmp"}}, {"storage.state_dir"}),
        ({"control": {"socket_path": "/var/lib/x"}}, {"control.socket_path"}),
        ({"update": {"https_allowed_hosts": ["evil"]}}, {"update.https_allowed_hosts"}),
        ({"device": {"id": "other"}}, {"device.id"}),
        ({"telemetry": {"bogus": 1}}, {"telemetry.bogus"}),
        ({"cameras": [{"name": "door", "source": "rtsp://evil/"}]}, {"cameras[0].source"}),
        ({"cameras": [{"name": "porch", "fps": 5}]}, {"cameras[0].name"}),
        ({"models": [{"slot": "detector", "path": "/tmp/evil"}]}, {"models[0].path"}),
        ({"models": [{"slot": "detector", "labels_path": "/x"}]}, {"models[0].labels_path"}),
        ({"logging": {"level": "file:/etc/shadow"}}, {"logging.level"}),
        ({"cameras": {"door": {}}}, {"cameras"}),
    ],
)
def test_everything_else_is_refused_by_key(tree: dict, expected: set[str]) -> None:
    assert keys(tree) == expected


def test_list_entries_merge_by_name_onto_the_file() -> None:
    merged = expand_lists({"cameras": [{"name": "door", "fps": 5}]}, FILE)
    assert merged["cameras"] == [{"name": "door", "source": "file:/srv/door.mp4", "fps": 5}]


def test_trial_confirmed_then_next_one_reverted_to_it(tmp_path: Path) -> None:
    begin_trial(tmp_path, DesiredLayer(1, {"telemetry": {"stats_interval_s": 5}}), 1.0)
    assert not (tmp_path / GOOD_NAME).exists()  # last good: the file alone
    assert advance_trial(tmp_path, 2.0) == 1
    assert confirm_trial(tmp_path, 1)
    begin_trial(tmp_path, DesiredLayer(2, {"telemetry": {"stats_interval_s": 1}}), 3.0)
    assert advance_trial(tmp_path, 4.0) == 2
    # A second start before it was confirmed: it crashed or hung the agent.
    assert advance_trial(tmp_path, 5.0) is None
    layer = read_desired(tmp_path)
    assert layer is not None
    assert layer.version == 1
    marker = reverted(tmp_path)
    assert marker is not None
    assert marker["version"] == 2
    assert marker["restored_version"] == 1
    assert stored_version(tmp_path) == 2  # v2 cannot be sent again unchanged


def test_revert_with_no_good_layer_leaves_the_file_alone(tmp_path: Path) -> None:
    begin_trial(tmp_path, DesiredLayer(4, {"telemetry": {"stats_interval_s": 5}}), 1.0)
    revert_trial(tmp_path, "deadline", 2.0)
    assert not desired_path(tmp_path).exists()
    accept_as_good(tmp_path, DesiredLayer(5, {}), 3.0)
    assert json.loads(desired_path(tmp_path).read_text())["state"] == "good"
    assert reverted(tmp_path) is None


def test_trial_decision() -> None:
    trial = ConfigTrial(7, started_mono_s=0.0, deadline_s=10.0, healthy_s=2.0)
    assert trial.decide(1.0, connected=False, health_status="ok") is None
    assert trial.decide(2.0, connected=True, health_status="ok") is None
    assert trial.decide(3.0, connected=True, health_status="down") is None  # resets
    assert trial.decide(4.0, connected=True, health_status="degraded") is None
    assert trial.decide(6.0, connected=True, health_status="ok") is Verdict.CONFIRM
    late = ConfigTrial(7, started_mono_s=0.0, deadline_s=10.0, healthy_s=2.0)
    assert late.decide(10.0, connected=True, health_status="down") is Verdict.REVERT
    assert "health down" in late.reason()


def test_daemon_start_counts_the_trial_and_reverts_what_does_not_validate(
    write_config, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = write_config(
        f"""
        [storage]
        state_dir = "{state}"
        [telemetry]
        stats_interval_s = 30
        """
    )
    state.mkdir()
    begin_trial(state, DesiredLayer(1, {"telemetry": {"stats_interval_s": 5}}), 1.0)
    loaded, trial = load_for_daemon(config, {}, now_s=2.0)
    assert (trial, loaded.config.telemetry.stats_interval_s) == (1, 5)
    # Started again without confirming (a crash, a hang): back to the file alone.
    loaded, trial = load_for_daemon(config, {}, now_s=3.0)
    assert (trial, loaded.desired_version, loaded.config.telemetry.stats_interval_s) == (
        None,
        None,
        30,
    )
    # A trial layer the config file no longer accepts is reverted at once.
    begin_trial(state, DesiredLayer(2, {"telemetry": {"stats_interval_s": -1}}), 4.0)
    loaded, trial = load_for_daemon(config, {}, now_s=5.0)
    assert trial is None
    assert loaded.desired_version is None
    marker = reverted(state)
    assert marker is not None
    assert marker["version"] == 2
    assert "does not validate" in marker["reason"]

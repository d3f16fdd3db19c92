"""Issue 17.7: `update install` of a path that is not there says so (not "unsigned")."""

from __future__ import annotations

from pathlib import Path

from agent.cli.main import main as agent_main
from tests.support.update_fleet import Fleet


def test_install_from_a_missing_directory_names_it(
    tmp_path: Path, short_range_model: Path, write_config, clean_env, capsys
):
    fleet = Fleet(tmp_path / "fleet", short_range_model)
    config = write_config(f"""
[device]
id = "cam-001"
[storage]
state_dir = "{tmp_path / "state"}"
[control]
socket_path = "{tmp_path / "run/control.sock"}"
[trust]
root = "{fleet.root_path}"
""")
    missing = tmp_path / "media/usb/bundle"
    code = agent_main(["update", "install", str(missing), "--config", str(config)])
    err = capsys.readouterr().err
    assert code != 0
    assert f"bundle directory {missing} does not exist" in err
    assert "unsigned" not in err

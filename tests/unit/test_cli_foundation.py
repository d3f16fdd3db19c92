from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agent.cli.main import main as agent_main
from agent.fleet.cli import main as fleet_main


def test_validate_config_good_and_bad(write_config, clean_env, capsys):
    good = write_config('[device]\nid = "cam-001"\n')
    assert agent_main(["validate-config", str(good)]) == 0
    assert "valid" in capsys.readouterr().out

    bad = write_config(
        '[[cameras]]\nname = "door"\nsource = "ftp://x"\nfps = "fast"\n', name="bad.toml"
    )
    assert agent_main(["validate-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: cameras[0].source" in err
    assert f"{bad}: cameras[0].fps" in err
    assert "'fast'" in err


def test_validate_config_print_is_redacted_json(write_config, clean_env, capsys):
    path = write_config('[mqtt]\npassword = "hunter2"\n')
    assert agent_main(["validate-config", str(path), "--print"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["mqtt"]["password"] == "<redacted>"
    assert "hunter2" not in out


def test_validate_config_uses_env_path(write_config, clean_env, capsys):
    path = write_config('[device]\nid = "from-env"\n')
    clean_env.setenv("EDGE_AGENT_CONFIG", str(path))
    assert agent_main(["validate-config"]) == 0
    assert str(path) in capsys.readouterr().out


def test_help_of_both_tools_runs_as_module():
    for module in ("agent", "agent.fleet"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage:" in proc.stdout


def test_fleet_help(capsys):
    with pytest.raises(SystemExit) as caught:
        fleet_main(["--help"])
    assert caught.value.code == 0
    assert "edge-fleet" in capsys.readouterr().out

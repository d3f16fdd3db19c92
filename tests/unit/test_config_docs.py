"""docs/configuration.md is generated from the config models and must match them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_config_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_reference_names_every_section_and_a_contract_key():
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for heading in (
        "`[device]`",
        "`[mqtt]`",
        "`[storage]`",
        "`[trust]`",
        "`[[cameras]]`",
        "`[[models]]`",
    ):
        assert heading in text
    assert "| `topic_root` |" in text
    assert "| `stall_timeout_s` |" in text

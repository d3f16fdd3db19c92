"""docs/operator-guide.md, walked: every command of its ``sh`` blocks, in order, against a
real Mosquitto and three real ``edge-agent run`` daemons; each exits as the guide says
(0, or the ``# (exit N)`` it shows) and prints every output line the guide shows.

Times in the output ("9 s ago") are compared as "N s ago". Set
EDGE_AGENT_GUIDE_TRANSCRIPT=FILE to keep what each command printed (to refresh the guide).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "operator-guide.md"
GUIDE_PORT = "18839"
EXIT_RE = re.compile(r"^\(exit (\d+)\)$")
AGE_RE = re.compile(r"\d+ (s|min|h|d) ago")


@dataclass(frozen=True)
class Command:
    text: str
    shown: tuple[str, ...]  # the output lines the guide shows

    @property
    def exit_code(self) -> int:
        for line in self.shown:
            match = EXIT_RE.match(line)
            if match:
                return int(match.group(1))
        return 0

    @property
    def background(self) -> bool:
        return self.text.rstrip().endswith("&")


def _take(lines: list[str], i: int) -> tuple[list[str], int]:
    """One command from line ``i``: with its continuation lines, here-document or loop."""
    first = lines[i]
    taken = [first]
    heredoc = re.search(r"<<'?(\w+)'?", first)
    if first.startswith("for "):
        end = "done"
    elif heredoc:
        end = heredoc.group(1)
    else:
        while taken[-1].endswith("\\"):
            i += 1
            taken.append(lines[i])
        return taken, i + 1
    while lines[i].strip() != end:
        i += 1
        taken.append(lines[i])
    return taken, i + 1


def guide_commands(text: str) -> list[Command]:
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].strip() or lines[i].startswith("#"):
                i += 1
                continue
            taken, i = _take(lines, i)
            shown = []
            while i < len(lines) and lines[i].startswith("#"):
                shown.append(lines[i][2:])
                i += 1
            commands.append(Command("\n".join(taken), tuple(shown)))
    return commands


def normalise(text: str) -> str:
    return AGE_RE.sub("N ago", text)


def test_guide_commands_parse():
    commands = guide_commands(GUIDE.read_text(encoding="utf-8"))
    texts = [c.text for c in commands]
    assert any(t.startswith("for n in 1 2 3") and t.endswith("done") for t in texts)
    assert sum(c.background for c in commands) == 3
    assert any(c.exit_code == 1 for c in commands)


def test_walk_the_operator_guide(tmp_path: Path, mosquitto: MosquittoBroker):
    work = tmp_path / "og"
    work.mkdir()
    (tmp_path / "assets").symlink_to(REPO / "assets")  # the guide runs from og/ in a checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    transcript: list[str] = []
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        for command in guide_commands(GUIDE.read_text(encoding="utf-8")):
            if "mosquitto" in command.text:
                continue  # the test's own broker stands in for section 1
            text = command.text.replace(GUIDE_PORT, str(mosquitto.port))
            if command.background:
                log = (tmp_path / f"daemon-{len(daemons)}.log").open("wb")
                daemons.append(
                    subprocess.Popen(
                        ["bash", "-c", f"exec {text.rstrip().rstrip('&')}"],
                        cwd=work,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                continue
            done = subprocess.run(
                ["bash", "-c", text],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            printed = done.stdout + done.stderr
            transcript.append(f"$ {command.text}\n{printed}(exit {done.returncode})\n")
            assert done.returncode == command.exit_code, (command.text, printed)
            for line in command.shown:
                if not EXIT_RE.match(line):
                    assert normalise(line) in normalise(printed), (command.text, line, printed)
        assert all(d.poll() is None for d in daemons), "a daemon stopped during the walk"
    finally:
        if out := os.environ.get("EDGE_AGENT_GUIDE_TRANSCRIPT"):
            Path(out).write_text("\n".join(transcript), encoding="utf-8")
        for daemon in daemons:
            if daemon.poll() is None:
                os.killpg(daemon.pid, signal.SIGTERM)
        for daemon in daemons:
            daemon.wait(timeout=30)

"""The package layout as rules: the pure trust chain does no IO, and imports run top-down.

Each rule is checked on the real tree and on a small bad example, so a checker that
stopped seeing imports would fail here instead of passing quietly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"

# Modules the pure verification chain must never import (IO, network, storage).
IO_MODULES = frozenset(
    {
        "os",
        "pathlib",
        "io",
        "shutil",
        "tempfile",
        "socket",
        "ssl",
        "http",
        "urllib.request",
        "sqlite3",
        "subprocess",
        "paho",
        "mmap",
        "fcntl",
        "select",
        "selectors",
    }
)
# Agent modules the trust chain may use besides itself: the error types only.
TRUST_MAY_IMPORT = ("agent.errors", "agent.update.trust")

# Top-level packages from the top (0) down. Imports may go to the same layer or below.
LAYERS: dict[str, int] = {
    "cli": 0,
    "fleet": 0,
    "__main__": 0,
    "service_setup": 0,  # `edge-agent setup-service`'s back end: reads profiles like a command
    "daemon": 1,
    "pipeline": 2,
    "update": 2,
    "diag": 2,
    "inference": 3,
    "uplink": 3,
    "capture": 3,
    "config": 4,
    "events": 4,
}
BASE_LAYER = 5  # errors, log, fsutil, clock, retry, stats, timeguard, assets, ...


def imports_of(source: str) -> list[str]:
    """Every module a source imports, at the top or inside functions."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def opens_files(source: str) -> bool:
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
        for node in ast.walk(ast.parse(source))
    )


def within(name: str, modules: frozenset[str] | tuple[str, ...]) -> bool:
    return any(name == module or name.startswith(f"{module}.") for module in modules)


def purity_violations(source: str) -> list[str]:
    bad = [
        name
        for name in imports_of(source)
        if within(name, IO_MODULES)
        or (within(name, ("agent",)) and not within(name, TRUST_MAY_IMPORT))
    ]
    if opens_files(source):
        bad.append("open()")
    return bad


def package_of(path: Path) -> str:
    rel = path.relative_to(AGENT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def layer_of(package: str) -> int:
    return LAYERS.get(package, BASE_LAYER)


def upward_imports(package: str, source: str) -> list[str]:
    here = layer_of(package)
    bad = []
    for name in imports_of(source):
        parts = name.split(".")
        if parts[0] != "agent" or len(parts) < 2 or parts[1] == package:
            continue
        if layer_of(parts[1]) < here:
            bad.append(name)
    return bad


def agent_files(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def test_trust_package_exists_and_is_not_empty():
    files = agent_files(AGENT / "update" / "trust")
    names = {f.stem for f in files}
    assert {"crypto", "envelope", "root", "manifest", "verify", "policy"} <= names


@pytest.mark.parametrize("path", agent_files(AGENT / "update" / "trust"), ids=lambda p: p.name)
def test_trust_chain_does_no_io(path):
    assert purity_violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os\n",
        "from pathlib import Path\n",
        "def f():\n    import sqlite3\n",
        "import paho.mqtt.client as mqtt\n",
        "from socket import create_connection\n",
        "from agent.update.store.models import ModelStore\n",
        "from agent.fsutil import atomic_write_bytes\n",
        "def f(p):\n    return open(p).read()\n",
    ],
)
def test_purity_rule_catches_io(source):
    assert purity_violations(source) != []


def test_purity_rule_allows_pure_imports():
    source = (
        "import hashlib\nfrom agent.errors import Reason\nfrom agent.update.trust import crypto\n"
    )
    assert purity_violations(source) == []


def test_imports_run_top_down():
    bad: dict[str, list[str]] = {}
    for path in agent_files(AGENT):
        found = upward_imports(package_of(path), path.read_text(encoding="utf-8"))
        if found:
            bad[str(path.relative_to(AGENT))] = found
    assert bad == {}


def test_layer_rule_catches_an_upward_import():
    assert upward_imports("capture", "from agent.pipeline.runner import Runner\n")
    assert upward_imports("inference", "def f():\n    from agent.daemon import control\n")
    assert not upward_imports("pipeline", "from agent.inference.base import Backend\n")


def test_trust_imports_nothing_from_its_siblings():
    for path in agent_files(AGENT / "update" / "trust"):
        for name in imports_of(path.read_text(encoding="utf-8")):
            siblings = ("agent.update.store", "agent.update.engines", "agent.update.transfer")
            assert not within(name, siblings), f"{path.name} imports {name}"

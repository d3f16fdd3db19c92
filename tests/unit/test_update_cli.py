"""``edge-agent update`` end to end, and the crash-consistency kill matrix (SIGKILL per step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from agent.update.store.faults import FAULT_ENV
from agent.update.store.journal import Journal
from agent.update.store.models import ModelStore
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import parse_manifest
from tests.support.update_fleet import Fleet, install_bundle, make_installer

KILLED = -9


def run(args, cfg, *, fault=None, check_json=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT")}
    if fault:
        env[FAULT_ENV] = fault
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "update", *args, "--config", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check_json:
        return proc, json.loads(proc.stdout)
    return proc, None


@pytest.fixture
def setup(tmp_path, short_range_model):
    fleet = Fleet(tmp_path / "fleet", short_range_model)
    state = tmp_path / "state"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [device]
        id = "cam-001"
        fleet = "default"
        [storage]
        state_dir = "{state}"
        [trust]
        root = "{fleet.root_path}"
        [update]
        max_transitions = 16
        [[models]]
        slot = "detector"
        path = "{short_range_model}"
        """)
    )
    return fleet, state, cfg


def bundle_via_cli(fleet, out, version, release, model):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.fleet",
            "bundle",
            "create",
            "--model",
            str(model),
            "--slot",
            "detector",
            "--fleet",
            "default",
            "--manifest-version",
            str(version),
            "--release",
            str(release),
            "--keys",
            str(fleet.keys),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def bundle_sha(bundle):
    import hashlib

    env = parse_envelope((bundle / "manifest.json").read_bytes(), 1 << 20)
    return hashlib.sha256(env.payload).hexdigest(), parse_manifest(env.payload)


def assert_consistent(state, allowed):
    """current resolves to a complete, verified version among ``allowed``; no torn leftovers."""
    store = ModelStore(state)
    sha = store.current_sha("detector")
    assert sha in allowed, (sha, allowed)
    if sha is not None:
        store.verify_version("detector", sha, allowed[sha].files)
    return sha


def assert_clean(state):
    names = [p.name for p in (state / "models" / "detector").iterdir()]
    assert not [n for n in names if n.endswith((".tmp", ".tmp-link"))], names


def test_install_commit_status_and_bad_model_rollback(setup, tmp_path, short_range_model):
    fleet, _state, cfg = setup
    good = bundle_via_cli(fleet, tmp_path / "good", 1, 1, short_range_model)
    proc, result = run(["install", str(good), "--json"], cfg, check_json=True)
    assert proc.returncode == 0, proc.stderr
    assert result["outcome"] == "committed"
    sha1, _ = bundle_sha(good)

    broken = tmp_path / "corrupt.tflite"
    broken.write_bytes(short_range_model.read_bytes()[:5000])
    bad = bundle_via_cli(fleet, tmp_path / "bad", 2, 2, broken)
    proc, _ = run(["install", str(bad)], cfg)
    assert proc.returncode == 1
    assert "rolled_back" in proc.stdout

    proc, status = run(["status", "--json"], cfg, check_json=True)
    assert proc.returncode == 0
    slot = status["slots"]["detector"]
    assert slot["active"]["sha256"] == sha1
    assert (slot["active"]["manifest_version"], slot["active"]["release"]) == (1, 1)
    assert slot["phase"] == "rolled_back"
    assert slot["last_result"] == {"outcome": "rolled_back", "reason": "health_failed"}
    assert status["trust"]["root_version"] == 1

    unsigned = tmp_path / "unsigned"
    bundle_via_cli(fleet, unsigned, 3, 3, short_range_model)
    doc = json.loads((unsigned / "manifest.json").read_text())
    doc["signatures"] = []
    (unsigned / "manifest.json").write_text(json.dumps(doc))
    proc, _ = run(["install", str(unsigned)], cfg)
    assert proc.returncode == 1
    assert "unsigned" in proc.stderr


def test_operator_rollback(setup, tmp_path, short_range_model):
    fleet, state, cfg = setup
    b1, b2 = fleet.bundle(manifest_version=1), fleet.bundle(manifest_version=2, release=2)
    # Same model bytes, different manifest: a different version dir.
    installer = make_installer(state, fleet)
    assert install_bundle(installer, b1).outcome == "committed"
    assert install_bundle(installer, b2).outcome == "committed"
    proc, _ = run(["rollback"], cfg)
    assert proc.returncode == 0, proc.stderr
    assert ModelStore(state).current_sha("detector") == bundle_sha(b1)[0]
    assert ModelStore(state).previous_sha("detector") == bundle_sha(b2)[0]


# Kill point → whether the new version ends up committed after restarts.
KILL_STEPS = [
    "verified",
    "stage_before_rename",
    "stage_after_rename",
    "previous_link_created",
    "current_link_created",
    "current_renamed",
    "trial_start",
    "commit_before_gc",
]
FAST_STEPS = {"stage_before_rename", "current_link_created", "trial_start"}


def settle(cfg, fault=None, cap=12):
    """Restart (start-up recovery) until the agent exits on its own, like Mender's harness."""
    for _ in range(cap):
        proc, _ = run(["recover"], cfg, fault=fault)
        if proc.returncode != KILLED:
            return proc
    pytest.fail("agent never settled")
    return None


def installed_v1(fleet, state):
    """v1 committed in process (fast); the subprocess under test installs v2."""
    b1, b2 = fleet.bundle(manifest_version=1), fleet.bundle(manifest_version=2, release=2)
    assert install_bundle(make_installer(state, fleet), b1).outcome == "committed"
    (sha1, m1), (sha2, m2) = bundle_sha(b1), bundle_sha(b2)
    return b1, b2, {sha1: m1, sha2: m2}, sha1, sha2


@pytest.mark.parametrize(
    "step",
    [s if s in FAST_STEPS else pytest.param(s, marks=pytest.mark.slow) for s in KILL_STEPS],
)
def test_kill_matrix(setup, tmp_path, short_range_model, step):
    fleet, state, cfg = setup
    b1, b2, versions, sha1, sha2 = installed_v1(fleet, state)
    proc, _ = run(["install", str(b2)], cfg, fault=step)
    assert proc.returncode == KILLED, proc.stderr
    assert_consistent(state, versions)  # never torn, even before recovery
    assert settle(cfg).returncode == 0
    assert assert_consistent(state, versions) == sha2
    assert_clean(state)
    assert Journal(state).load("detector").phase.value == "committed"
    kept = {p.name for p in (state / "models" / "detector").glob(".v-*")}
    assert kept == {f".v-{sha1}", f".v-{sha2}"}
    # The floor survived the crash: replaying the older manifest is still a rollback.
    proc, _ = run(["install", str(b1)], cfg)
    assert proc.returncode == 1
    assert "rollback" in proc.stderr


def test_kill_in_trial_forever_rolls_back(setup, tmp_path, short_range_model):
    fleet, state, cfg = setup
    _b1, b2, versions, sha1, _sha2 = installed_v1(fleet, state)
    assert run(["install", str(b2)], cfg, fault="trial_start")[0].returncode == KILLED
    assert settle(cfg, fault="trial_start").returncode == 0
    assert assert_consistent(state, versions) == sha1
    entry = Journal(state).load("detector")
    assert entry.phase.value == "rolled_back"
    assert entry.attempts == 3
    assert_clean(state)


@pytest.mark.slow
def test_rollback_failing_forever_ends_inconsistent(setup, tmp_path, short_range_model):
    fleet, state, cfg = setup
    _b1, b2, versions, _sha1, sha2 = installed_v1(fleet, state)
    fault = "trial_start,rollback_swap"
    assert run(["install", str(b2)], cfg, fault=fault)[0].returncode == KILLED
    proc = settle(cfg, fault=fault, cap=20)
    assert proc.returncode == 1
    entry = Journal(state).load("detector")
    assert entry.phase.value == "inconsistent"
    assert sha2 in entry.detail  # names the model that is active
    assert assert_consistent(state, versions) == sha2
    assert settle(cfg, fault=fault).returncode == 0  # terminal: no further loop

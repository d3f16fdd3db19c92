"""Signed commands (issue 18.1 c): the pure check and the device gate on a real trust dir.

Real Ed25519 keys from ``edge-fleet keys init`` and a real root rotation that adds the
``command`` role with a threshold of 2.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.errors import CommandError, Reason, VerificationError
from agent.fleet.keys import init_keys, rotate_root, signers_for
from agent.update.store.commandgate import SEQUENCE_FILE, CommandGate
from agent.update.store.truststore import TrustStore, load_root_file
from agent.update.trust.command import make_command, required, verify_command

NOW = time.time()
REQUEST = {"version": 3, "config": {"logging": {"level": "info"}}}


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    keys = tmp_path_factory.mktemp("keys")
    init_keys(keys)
    rotate_root(keys, roles=["command"], thresholds={"command": 2})
    return keys


def signed(keys: Path, *, role="command", n=None, op="config", device="cam-001", fleet="f1",
           sequence=10, expires_s=NOW + 300, request=REQUEST) -> str:  # fmt: skip
    root = load_root_file(keys / "root.json")
    signers = signers_for(keys, root, role)[:n]
    return make_command(
        op=op,
        device=device,
        fleet=fleet,
        sequence=sequence,
        expires_s=expires_s,
        request=request,
        keys=signers,
    )


def check(keys: Path, data: object, last: int = 0, op: str = "config"):
    root = load_root_file(keys / "root.json")
    return verify_command(
        data, root=root, op=op, device="cam-001", fleet="f1", now_s=NOW, last_sequence=last
    )


def test_required_only_where_the_root_has_a_command_role(keys):
    v1 = load_root_file(keys / "roots" / "1.root.json")
    v2 = load_root_file(keys / "root.json")
    assert v2.role("command").threshold == 2
    assert not required(v1, "config")  # off by default
    assert required(v2, "config")
    assert not required(v2, "ping")


def test_a_well_signed_command_gives_its_signed_request(keys):
    command = check(keys, signed(keys))
    assert command.request == REQUEST
    assert command.sequence == 10


@pytest.mark.parametrize(
    ("changes", "last", "reason"),
    [
        ({"n": 1}, 0, Reason.UNSIGNED),  # one of the two signatures the threshold wants
        ({"role": "release"}, 0, Reason.UNSIGNED),  # keys of another role
        ({"device": "cam-002"}, 0, Reason.NOT_TARGETED),
        ({"fleet": "f2"}, 0, Reason.NOT_TARGETED),
        ({"expires_s": NOW - 1}, 0, Reason.EXPIRED),
        ({"sequence": 10}, 10, Reason.ROLLBACK),  # a replay
        ({"sequence": 9}, 10, Reason.ROLLBACK),
        ({"op": "restart"}, 0, Reason.MALFORMED),  # signed for another op
    ],
)
def test_refusals(keys, changes, last, reason):
    data = signed(keys, **{"n": None, **changes})
    with pytest.raises(VerificationError) as info:
        check(keys, data, last)
    assert info.value.reason is reason, info.value


def test_an_unsigned_or_tampered_command_is_refused(keys):
    for data in (None, REQUEST, "{}", "not json"):
        with pytest.raises(VerificationError) as info:
            check(keys, data)
        assert info.value.reason in (Reason.UNSIGNED, Reason.MALFORMED)
    env = json.loads(signed(keys))
    other = json.loads(signed(keys, request={"version": 9, "config": {}}))
    env["payload"] = other["payload"]  # another request under the first one's signatures
    with pytest.raises(VerificationError) as info:
        check(keys, json.dumps(env))
    assert info.value.reason is Reason.UNSIGNED


def gate(tmp_path: Path, root: Path) -> CommandGate:
    return CommandGate(TrustStore(tmp_path / "state", root), "cam-001", "f1")


def test_gate_requires_signatures_persists_the_sequence_and_refuses_replays(tmp_path, keys):
    device = gate(tmp_path, keys / "roots" / "2.root.json")
    with pytest.raises(CommandError) as info:
        device.admit("config", REQUEST, NOW)
    assert info.value.reason is Reason.UNSIGNED
    assert device.admit("ping", {}, NOW) == {}  # only ops that change the device
    body = {"signed": signed(keys, sequence=20), "version": 99}  # unsigned extras ignored
    assert device.admit("config", body, NOW) == REQUEST
    saved = json.loads((tmp_path / "state" / "trust" / SEQUENCE_FILE).read_text())
    assert saved == {"sequence": 20}
    with pytest.raises(CommandError) as info:
        gate(tmp_path, keys / "roots" / "2.root.json").admit("config", body, NOW)  # restart
    assert info.value.reason is Reason.ROLLBACK
    assert device.admit("config", {"signed": signed(keys, sequence=21)}, NOW) == REQUEST


def test_gate_is_off_for_a_root_without_the_role_and_fails_closed_on_a_bad_sequence(tmp_path, keys):
    device = gate(tmp_path, keys / "roots" / "1.root.json")
    assert device.admit("config", REQUEST, NOW) == REQUEST  # off by default
    strict = gate(tmp_path / "b", keys / "roots" / "2.root.json")
    (tmp_path / "b" / "state" / "trust").mkdir(parents=True)
    (tmp_path / "b" / "state" / "trust" / SEQUENCE_FILE).write_text("{garbage")
    with pytest.raises(CommandError) as info:
        strict.admit("config", {"signed": signed(keys, sequence=30)}, NOW)
    assert info.value.reason is Reason.TRUST_STATE_CORRUPT

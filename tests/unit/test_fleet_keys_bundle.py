"""edge-fleet keys init / root rotate / bundle create through the real CLI entry point."""

from __future__ import annotations

import stat

from agent.fleet.cli import main
from agent.update.store.bundle import check_chunk_index, read_root_chain
from agent.update.store.truststore import load_root_file
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import parse_manifest
from agent.update.trust.root import walk


def test_keys_rotate_and_bundle(tmp_path, short_range_model):
    keys = tmp_path / "keys"
    assert main(["keys", "init", str(keys), "--threshold", "2"]) == 0
    for pem in (keys / "keys").glob("*.pem"):
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    v1 = load_root_file(keys / "root.json")
    assert (v1.version, v1.role("root").threshold, len(v1.role("root").keyids)) == (1, 2, 2)
    assert main(["root", "rotate", str(keys), "--role", "root", "--role", "release"]) == 0
    v2 = load_root_file(keys / "root.json")
    assert v2.version == 2
    assert v2.role("release").keyids.isdisjoint(v1.role("release").keyids)
    out = tmp_path / "bundle"
    assert (
        main(
            [
                "bundle",
                "create",
                "--model",
                str(short_range_model),
                "--slot",
                "detector",
                "--fleet",
                "default",
                "--manifest-version",
                "7",
                "--release",
                "3",
                "--devices",
                "cam-001",
                "cam-002",
                "--compat",
                "arch=x86_64",
                "--health",
                "max_latency_ms=500",
                "--chunk-size",
                "65536",
                "--keys",
                str(keys),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    env = parse_envelope((out / "manifest.json").read_bytes(), 1 << 20)
    v2.require(env, "release")
    manifest = parse_manifest(env.payload)
    assert manifest.devices == ("cam-001", "cam-002")
    assert manifest.health.max_latency_ms == 500
    table = check_chunk_index(out, manifest)
    assert len(table[short_range_model.name]) == -(-short_range_model.stat().st_size // 65536)
    chain = read_root_chain(out, 1)
    assert walk(v1, chain, 0).version == 2

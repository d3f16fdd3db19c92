"""Issue 18.4: a chunk size devices refuse is refused by ``bundle create`` too, and an
oversize chunk is ``malformed`` on the device (the manifest) or dropped (a frame), never
``too_large``."""

from __future__ import annotations

import pytest

from agent.errors import CommandError, Reason, UpdateError
from agent.fleet.bundle import create_bundle
from agent.fleet.cli import main
from agent.update.trust.manifest import MAX_CHUNK, MIN_CHUNK
from tests.support.update_fleet import Fleet, install_bundle, make_installer, snapshot


@pytest.fixture
def fleet(tmp_path, short_range_model):
    return Fleet(tmp_path / "fleet", short_range_model)


@pytest.mark.parametrize("size", [MIN_CHUNK - 1, MAX_CHUNK + 1, 0])
def test_bundle_create_refuses_chunk_sizes_devices_refuse(tmp_path, fleet, size):
    out = tmp_path / "b"
    with pytest.raises(CommandError) as info:
        create_bundle(fleet.spec(chunk_size=size), fleet.keys, out)
    assert info.value.reason is Reason.MALFORMED
    assert f"{MIN_CHUNK}..{MAX_CHUNK}" in info.value.message
    assert not out.exists()  # refused before anything was written


def test_cli_exits_nonzero_and_names_the_range(tmp_path, fleet, short_range_model, capsys):
    argv = ["bundle", "create", "--model", str(short_range_model), "--slot", "detector"]
    argv += ["--fleet", "default", "--manifest-version", "1", "--release", "1"]
    argv += ["--chunk-size", str(2 * MAX_CHUNK), "--keys", str(fleet.keys)]
    argv += ["--out", str(tmp_path / "b")]
    assert main(argv) != 0
    assert "--chunk-size must be" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("size", [MIN_CHUNK, MAX_CHUNK])
def test_the_limits_themselves_install(tmp_path, fleet, size):
    installer = make_installer(tmp_path / "state", fleet)
    assert install_bundle(installer, fleet.bundle(chunk_size=size)).outcome == "committed"


def test_device_reports_an_oversize_chunk_size_as_malformed(tmp_path, fleet):
    """A signed manifest with a chunk size over the limit (made without the tool's check)."""
    installer = make_installer(tmp_path / "state", fleet)
    bundle = fleet.bundle()
    doc = fleet.payload(bundle)
    doc["transfer"]["chunk_size"] = MAX_CHUNK + 1
    fleet.resign(bundle, doc)
    before = snapshot(tmp_path / "state")
    with pytest.raises(UpdateError) as info:
        install_bundle(installer, bundle)
    assert info.value.reason is Reason.MALFORMED
    assert "chunk_size" in info.value.message
    assert snapshot(tmp_path / "state") == before

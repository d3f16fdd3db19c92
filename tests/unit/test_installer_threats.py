"""One test per threat row that applies without MQTT: reason code AND nothing changed on disk."""

from __future__ import annotations

import base64
import json
import time

import pytest

from agent.errors import Reason, UpdateError
from agent.fleet.keys import rotate_root
from agent.update.store.bundle import MANIFEST_FILE
from agent.update.trust import crypto
from agent.update.trust.envelope import Envelope, Signature, parse_envelope
from tests.support.update_fleet import FixedClock, Fleet, install_bundle, make_installer, snapshot

DAY = 86400.0


@pytest.fixture
def fleet(tmp_path, short_range_model):
    return Fleet(
        tmp_path / "fleet", short_range_model, threshold=2, root_keys=3, release_threshold=2
    )


@pytest.fixture
def device(tmp_path, fleet):
    """A device with v1 committed; returns (installer, state_dir)."""
    state = tmp_path / "state"
    installer = make_installer(state, fleet)
    assert install_bundle(installer, fleet.bundle()).outcome == "committed"
    return installer, state


def rejected(installer, bundle, reason):
    with pytest.raises(UpdateError) as info:
        install_bundle(installer, bundle)
    assert info.value.reason is reason, info.value
    return info.value


def assert_rejected_unchanged(device, bundle, reason):
    installer, state = device
    before = snapshot(state)
    active = installer.store.current_model("detector")
    rejected(installer, bundle, reason)
    assert snapshot(state) == before
    assert installer.store.current_model("detector") == active


def _rewrite_sigs(bundle, sigs):
    env = parse_envelope((bundle / MANIFEST_FILE).read_bytes(), 1 << 20)
    new = Envelope(env.payload_type, env.payload, tuple(sigs(env)))
    (bundle / MANIFEST_FILE).write_bytes(new.to_bytes())


# --- T1 / T10 arbitrary software, key compromise below threshold ------------------


def test_t1_unsigned(device, fleet):
    bundle = fleet.bundle(manifest_version=2)
    _rewrite_sigs(bundle, lambda env: [])
    assert_rejected_unchanged(device, bundle, Reason.UNSIGNED)


def test_t1_unknown_key(device, fleet):
    bundle = fleet.bundle(manifest_version=2)
    rogue = [crypto.generate_key(), crypto.generate_key()]
    _rewrite_sigs(
        bundle,
        lambda env: [
            Signature(crypto.private_key_id(k), crypto.sign(k, env.payload_type, env.payload))
            for k in rogue
        ],
    )
    assert_rejected_unchanged(device, bundle, Reason.UNSIGNED)


def test_t1_same_key_twice_counts_once(device, fleet):
    bundle = fleet.bundle(manifest_version=2)
    _rewrite_sigs(bundle, lambda env: [env.signatures[0], env.signatures[0]])
    assert_rejected_unchanged(device, bundle, Reason.UNSIGNED)


def test_t10_one_valid_one_garbage_below_threshold(device, fleet):
    bundle = fleet.bundle(manifest_version=2)
    _rewrite_sigs(
        bundle, lambda env: [env.signatures[0], Signature(env.signatures[1].keyid, "00" * 64)]
    )
    assert_rejected_unchanged(device, bundle, Reason.UNSIGNED)


def test_t1_tampered_payload(device, fleet):
    bundle = fleet.bundle(manifest_version=2)
    doc = json.loads((bundle / MANIFEST_FILE).read_text())
    payload = base64.b64decode(doc["payload"]).replace(b'"release":1', b'"release":9')
    doc["payload"] = base64.b64encode(payload).decode()
    (bundle / MANIFEST_FILE).write_text(json.dumps(doc))
    assert_rejected_unchanged(device, bundle, Reason.UNSIGNED)


# --- T3 / T4 rollback and replay --------------------------------------------------


def test_t3_rollback_even_after_newer_expired(tmp_path, fleet):
    state = tmp_path / "state"
    now = time.time()
    clock = FixedClock(now)
    installer = make_installer(state, fleet, clock=clock)
    old = fleet.bundle(manifest_version=4, expires_in_days=30)
    newer = fleet.bundle(manifest_version=5, expires_in_days=1)
    assert install_bundle(installer, newer).outcome == "committed"
    clock.now = now + 2 * DAY  # v5 expired; the floor survives its expiry
    before = snapshot(state)
    rejected(installer, old, Reason.ROLLBACK)
    assert snapshot(state) == before
    assert installer.trust.load_state().floors["default/detector"].manifest_version == 5


def test_t4_same_manifest_is_noop_and_conflict_is_rejected(device, fleet):
    installer, state = device
    first = fleet.base / "bundle-1"
    before = snapshot(state)
    assert install_bundle(installer, first).outcome == "noop"
    assert snapshot(state) == before
    conflict = fleet.bundle(manifest_version=1, release=2)
    assert_rejected_unchanged(device, conflict, Reason.VERSION_CONFLICT)


# --- T5 / T22 freshness and clock ---------------------------------------------------


def test_t5_expired(tmp_path, fleet):
    state = tmp_path / "state"
    installer = make_installer(state, fleet, clock=FixedClock(time.time() + 40 * DAY))
    rejected(installer, fleet.bundle(expires_in_days=30), Reason.EXPIRED)
    assert not state.exists() or snapshot(state) == {}


def test_t22_clock_at_1970_is_clock_invalid_not_expired(device, fleet):
    installer, _state = device
    installer.clock = FixedClock(0.0)
    assert_rejected_unchanged(device, fleet.bundle(manifest_version=2), Reason.CLOCK_INVALID)
    installer.clock = FixedClock(time.time() + 400 * DAY)
    assert_rejected_unchanged(device, fleet.bundle(manifest_version=3), Reason.EXPIRED)


# --- T21 downgrade --------------------------------------------------------------------


def test_t21_downgrade_needs_flag_and_downgrade_role(device, fleet):
    installer, _state = device
    assert install_bundle(installer, fleet.bundle(manifest_version=2, release=5)).outcome == (
        "committed"
    )
    no_flag = fleet.bundle(manifest_version=3, release=4)
    assert_rejected_unchanged(device, no_flag, Reason.DOWNGRADE_NOT_AUTHORISED)
    flag_release_only = fleet.bundle(manifest_version=4, release=4)
    doc = fleet.payload(flag_release_only)
    doc["model"]["downgrade"] = True
    fleet.resign(flag_release_only, doc)
    assert_rejected_unchanged(device, flag_release_only, Reason.UNSIGNED)
    ok = fleet.bundle(manifest_version=5, release=4, downgrade=True)
    assert install_bundle(installer, ok).outcome == "committed"
    assert installer.trust.load_state().floors["default/detector"].release == 4


# --- T12 targeting and compatibility ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"devices": ["cam-999"]}, Reason.NOT_TARGETED),
        ({"fleet": "other"}, Reason.NOT_TARGETED),
        ({"slot": "classifier"}, Reason.NOT_TARGETED),
        ({"compat": {"tensorrt": "8.6"}}, Reason.INCOMPATIBLE),
        ({"compat": {"arch": "aarch64"}}, Reason.INCOMPATIBLE),
        ({"compat": {"litert_min": "9.0"}}, Reason.INCOMPATIBLE),
        ({"compat": {"compute_capability": "8.7"}}, Reason.INCOMPATIBLE),
    ],
)
def test_t12_wrong_target(device, fleet, changes, reason):
    assert_rejected_unchanged(device, fleet.bundle(manifest_version=2, **changes), reason)


def test_t12_matching_compat_installs(device, fleet):
    installer, _ = device
    bundle = fleet.bundle(
        manifest_version=2, devices=["cam-001"], compat={"tensorrt": "10.3", "litert_min": "2.0"}
    )
    assert install_bundle(installer, bundle).outcome == "committed"


# --- T8 endless data ---------------------------------------------------------------------


def test_t8_too_large(device, fleet):
    installer, _ = device
    installer.max_model_bytes = 1024
    assert_rejected_unchanged(device, fleet.bundle(manifest_version=2), Reason.TOO_LARGE)


def test_t8_huge_manifest_rejected_before_parsing(device, fleet):
    bundle = fleet.bundle(manifest_version=2)
    (bundle / MANIFEST_FILE).write_bytes(b"{" + b" " * (10 << 20) + b"}")
    assert_rejected_unchanged(device, bundle, Reason.TOO_LARGE)


# --- T2 / T7 / T15 wrong bytes ----------------------------------------------------------------


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def assert_files_rejected(device, bundle, reason):
    """Floor persists (the manifest validated), but no model file, link or journal phase moved."""
    installer, state = device
    models_before = snapshot(state / "models")
    active = installer.store.current_model("detector")
    err = rejected(installer, bundle, reason)
    assert snapshot(state / "models") == models_before
    assert installer.store.current_model("detector") == active
    entry = installer.journal.load("detector")
    assert entry.phase.value == "idle"
    assert entry.last_result == {"outcome": "rejected", "reason": reason.value}
    return err


def test_t2_hash_mismatch(device, fleet, short_range_model):
    bundle = fleet.bundle(manifest_version=2)
    _flip_byte(bundle / short_range_model.name)
    assert_files_rejected(device, bundle, Reason.HASH_MISMATCH)


@pytest.mark.parametrize("delta", [-1, 1])
def test_t2_length_mismatch(device, fleet, short_range_model, delta):
    bundle = fleet.bundle(manifest_version=2)
    path = bundle / short_range_model.name
    data = path.read_bytes()
    path.write_bytes(data[:-1] if delta < 0 else data + b"\0")
    assert_files_rejected(device, bundle, Reason.LENGTH_MISMATCH)


def test_t7_mix_and_match_labels(device, fleet, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("face\n")
    bundle = fleet.bundle(manifest_version=2, extra_files=[labels])
    (bundle / "labels.txt").write_text("cars\n")  # same length, from another release
    assert_files_rejected(device, bundle, Reason.HASH_MISMATCH)


def test_t7_chunk_index_from_other_release(device, fleet):
    bundle = fleet.bundle(manifest_version=2)
    other = fleet.bundle(manifest_version=3, chunk_size=4096)
    (bundle / "chunk_index.json").write_bytes((other / "chunk_index.json").read_bytes())
    installer, state = device
    models_before = snapshot(state / "models")
    with pytest.raises(UpdateError) as info:
        install_bundle(installer, bundle)
    assert info.value.reason in {Reason.HASH_MISMATCH, Reason.LENGTH_MISMATCH}
    assert snapshot(state / "models") == models_before


def test_t15_staged_file_modified_before_activation(tmp_path, fleet, short_range_model):
    state = tmp_path / "state"

    def tamper(step):
        if step == "stage_after_rename":
            version = next((state / "models" / "detector").glob(".v-*"))
            target = version / short_range_model.name
            version.chmod(0o755)
            target.chmod(0o644)
            _flip_byte(target)

    installer = make_installer(state, fleet, fault=tamper)
    rejected(installer, fleet.bundle(), Reason.HASH_MISMATCH)
    assert installer.store.current_model("detector") is None
    assert list((state / "models" / "detector").iterdir()) == []


# --- T16 names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x.tflite", "/etc/passwd", ".hidden", "a/b", ""])
def test_t16_bad_name(device, fleet, name, tmp_path):
    bundle = fleet.bundle(manifest_version=2)
    doc = fleet.payload(bundle)
    doc["files"][0]["name"] = name
    doc["model"]["file"] = name
    fleet.resign(bundle, doc)
    assert_rejected_unchanged(device, bundle, Reason.BAD_NAME)
    assert not (tmp_path / "x.tflite").exists()


# --- space and trust state ----------------------------------------------------------------------


def test_insufficient_space_before_any_byte(tmp_path, fleet):
    state = tmp_path / "state"
    installer = make_installer(state, fleet, free_bytes=lambda _path: 4096)
    err = rejected(installer, fleet.bundle(), Reason.INSUFFICIENT_SPACE)
    assert err.data["free"] == 4096
    assert list((state / "models" / "detector").iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "delete", "garbage_floor"])
def test_t17_trust_state_corrupt(device, fleet, damage):
    _installer, state = device
    path = state / "trust" / "state.json"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:10])
    elif damage == "delete":
        path.unlink()
    else:
        doc = json.loads(path.read_text())
        doc["floors"]["default/detector"]["manifest_version"] = "one"
        path.write_text(json.dumps(doc))
    assert_rejected_unchanged(device, fleet.bundle(manifest_version=2), Reason.TRUST_STATE_CORRUPT)


# --- T6 / T11 key rotation and fast-forward ---------------------------------------


def test_t6_fast_forward_recovery_after_release_key_rotation(device, fleet):
    installer, _ = device
    assert install_bundle(installer, fleet.bundle(manifest_version=999_999)).outcome == "committed"
    old_signed = fleet.bundle(manifest_version=2, release=2)  # signed by the old release keys
    rotate_root(fleet.keys, roles=["release"])
    new_signed = fleet.bundle(manifest_version=1, release=2)
    assert install_bundle(installer, new_signed).outcome == "committed"
    assert installer.trust.load_root().version == 2
    rejected(installer, old_signed, Reason.UNSIGNED)


# --- T19 a validly signed but bad model -------------------------------------------


def test_t19_unloadable_model_rolls_back_and_old_keeps_serving(device, fleet, tmp_path):
    installer, _ = device
    active = installer.store.current_model("detector")
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"TFL3" + bytes(range(256)) * 64)
    result = install_bundle(installer, fleet.bundle(bad, manifest_version=2, release=2))
    assert (result.outcome, result.reason) == ("rolled_back", Reason.HEALTH_FAILED)
    assert installer.store.current_model("detector") == active
    # The same bundle is not retried under the same manifest; a newer manifest may retry.
    rejected(installer, fleet.base / "bundle-2", Reason.HEALTH_FAILED)


def test_t19_wrong_output_shapes_rolls_back(device, fleet):
    installer, _ = device
    active = installer.store.current_model("detector")
    bundle = fleet.bundle(manifest_version=2, release=2, health={"output_shapes": [[1, 1]]})
    result = install_bundle(installer, bundle)
    assert result.outcome == "rolled_back"
    assert "output shapes" in result.detail
    assert installer.store.current_model("detector") == active

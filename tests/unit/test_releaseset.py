"""Release sets (issue 18.9): the pure check, and the device refusing mixed releases.

The installer tests build real signed bundles with ``edge-fleet bundle create --sibling``
(``create_bundle``) and install them with the real installer on real files.
"""

from __future__ import annotations

import pytest

from agent.errors import CommandError, Reason, UpdateError
from agent.fleet.cli import main
from agent.update.store.bundle import MANIFEST_FILE
from agent.update.trust.envelope import canonical_bytes, parse_envelope
from agent.update.trust.manifest import parse_manifest
from agent.update.trust.releaseset import (
    Member,
    ReleaseSet,
    check_siblings,
    member_digest,
    member_of,
    parse_release_set,
)
from tests.support.update_fleet import Fleet, install_bundle, make_installer, snapshot

A, B, C = "a" * 64, "b" * 64, "c" * 64


def rset(release: int, **members: str) -> ReleaseSet:
    return ReleaseSet(release, tuple(sorted(members.items())))


# --- the pure check -------------------------------------------------------------------


def test_matching_sibling_is_accepted():
    five = rset(5, detector=A, classifier=B)
    assert check_siblings("detector", five, {"classifier": [Member(B, five)]}) is None


def test_sibling_on_an_older_release_or_none_is_the_upgrade_under_way():
    five = rset(5, detector=A, classifier=B)
    older = Member(C, rset(4, detector="d" * 64, classifier=C))
    assert check_siblings("detector", five, {"classifier": [older]}) is None
    assert check_siblings("detector", five, {"classifier": [Member(C, None)]}) is None
    assert check_siblings("detector", five, {}) is None  # nothing installed there yet


def test_sibling_on_a_newer_release_is_refused():
    four = rset(4, detector=A, classifier=B)
    six = Member(C, rset(6, detector="d" * 64, classifier=C))
    why = check_siblings("detector", four, {"classifier": [six]})
    assert why is not None
    assert "release 6" in why


def test_same_release_other_member_is_refused():
    five = rset(5, detector=A, classifier=B)
    other = Member(C, rset(5, detector=A, classifier=C))  # a second set numbered 5
    assert check_siblings("detector", five, {"classifier": [other]}) is not None
    # The sibling's digest matches but its set names another detector: not signed together.
    twisted = Member(B, rset(5, detector="d" * 64, classifier=B))
    assert check_siblings("detector", five, {"classifier": [twisted]}) is not None


def test_a_pending_sibling_counts_as_well_as_the_active_one():
    five = rset(5, detector=A, classifier=B)
    siblings = {"classifier": [Member(B, five), Member(C, rset(6, detector=A, classifier=C))]}
    assert check_siblings("detector", five, siblings) is not None


def test_single_slot_manifests_are_not_checked():
    six = Member(C, rset(6, detector=A, classifier=C))
    assert check_siblings("detector", None, {"classifier": [six]}) is None


def test_parse_requires_the_set_to_name_this_manifest():
    raw = {"release": 2, "members": {"detector": A, "classifier": B}}
    assert parse_release_set(raw, "detector", A) == rset(2, detector=A, classifier=B)
    with pytest.raises(ValueError, match="does not name this manifest"):
        parse_release_set(raw, "detector", C)
    for bad in (
        {"release": 2, "members": {"detector": A}},  # a set of one
        {"release": 0, "members": {"detector": A, "classifier": B}},
        {"release": 2, "members": {"detector": A, "Bad/slot": B}},
        {"release": 2, "members": {"detector": A, "classifier": "xyz"}},
        {"release": 2, "members": {"detector": A, "classifier": B}, "extra": 1},
    ):
        with pytest.raises((ValueError, TypeError)):
            parse_release_set(bad, "detector", A)


def test_member_digest_leaves_the_release_set_out():
    doc = {"targets": {"slot": "detector"}, "x": 1}
    digest = member_digest(doc)
    bound = {**doc, "release_set": {"release": 1, "members": {"detector": digest, "c": B}}}
    assert member_digest(bound) == digest
    assert member_of(canonical_bytes(bound)).release_set == rset(1, detector=digest, c=B)


# --- bundles and the real installer ---------------------------------------------------


@pytest.fixture
def fleet(tmp_path, short_range_model):
    return Fleet(tmp_path / "fleet", short_range_model)


def release(fleet, number, version, **extra):
    """A detector + classifier release: two bundles bound by one signed release set."""
    det = fleet.bundle(slot="detector", manifest_version=version, release=number, **extra)
    cls = fleet.bundle(
        slot="classifier", manifest_version=version, release=number, siblings=[det], **extra
    )
    return det, cls


def manifest_of(bundle):
    return parse_manifest(parse_envelope((bundle / MANIFEST_FILE).read_bytes(), 1 << 20).payload)


def refused(installer, bundle, state):
    before = snapshot(state)
    with pytest.raises(UpdateError) as info:
        install_bundle(installer, bundle)
    assert info.value.reason is Reason.RELEASE_MISMATCH, info.value
    assert snapshot(state) == before  # refused before the floor moved: nothing written
    return info.value


def test_bundle_create_binds_both_manifests_into_one_release_set(fleet):
    det, cls = release(fleet, 3, 1)
    d, c = manifest_of(det), manifest_of(cls)
    assert d.release_set is not None
    assert d.release_set == c.release_set
    assert d.release_set.release == 3
    assert dict(d.release_set.members).keys() == {"detector", "classifier"}


def test_device_never_mixes_slots_across_releases(tmp_path, fleet):
    state = tmp_path / "state"
    installer = make_installer(state, fleet, slots=frozenset({"detector", "classifier"}))
    det1, cls1 = release(fleet, 1, 1)
    assert install_bundle(installer, det1).outcome == "committed"
    assert install_bundle(installer, cls1).outcome == "committed"
    det2, cls2 = release(fleet, 2, 2)
    # Two sets both numbered 2 (say a re-cut): their members must not be combined.
    _, cls2_other = release(fleet, 2, 3)
    # A classifier cut for release 1, published late with a higher manifest version.
    _, cls1_late = release(fleet, 1, 4)
    assert install_bundle(installer, det2).outcome == "committed"  # classifier follows
    err = refused(installer, cls2_other, state)
    assert "another manifest of release 2" in err.message
    err = refused(installer, cls1_late, state)
    assert "newer than this manifest's release 1" in err.message
    assert install_bundle(installer, cls2).outcome == "committed"
    # A detector without a release set is not checked (single-slot fleets unaffected).
    assert (
        install_bundle(installer, fleet.bundle(manifest_version=5, release=2)).outcome
        == "committed"
    )


def test_single_slot_fleet_is_unaffected(tmp_path, fleet):
    installer = make_installer(tmp_path / "state", fleet)
    for version in (1, 2):
        bundle = fleet.bundle(manifest_version=version)
        assert manifest_of(bundle).release_set is None
        assert install_bundle(installer, bundle).outcome == "committed"


def test_sibling_must_be_verified_and_of_the_same_fleet(tmp_path, fleet):
    det = fleet.bundle(slot="detector")
    other_fleet = fleet.bundle(slot="detector", fleet="other")
    with pytest.raises(CommandError) as info:
        fleet.bundle(slot="classifier", siblings=[other_fleet])
    assert info.value.reason is Reason.MALFORMED
    doc = fleet.payload(det)
    doc["model"]["release"] = 99
    forged = fleet.resign(det, doc, role="heartbeat")  # keys that may not sign releases
    with pytest.raises(CommandError) as info:
        fleet.bundle(slot="classifier", siblings=[det])
    assert info.value.reason is Reason.UNSIGNED
    assert (det / MANIFEST_FILE).read_bytes() == forged  # the tool never re-signed it


def test_release_set_needs_a_sibling_on_the_command_line(tmp_path, short_range_model):
    keys = tmp_path / "keys"
    assert main(["keys", "init", str(keys)]) == 0
    argv = ["bundle", "create", "--model", str(short_range_model), "--slot", "detector"]
    argv += ["--fleet", "default", "--manifest-version", "1", "--release", "1"]
    argv += ["--keys", str(keys), "--out", str(tmp_path / "b"), "--release-set", "4"]
    assert main(argv) != 0
    assert not (tmp_path / "b").exists()

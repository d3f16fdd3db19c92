"""Strict manifest parsing and the pure policy decisions."""

from __future__ import annotations

import time

import pytest

from agent.errors import Reason, VerificationError
from agent.fleet.bundle import BundleSpec, manifest_document
from agent.update.trust.envelope import canonical_bytes
from agent.update.trust.manifest import parse_manifest
from agent.update.trust.policy import (
    DeviceFacts,
    Floor,
    Verdict,
    check_clock,
    check_compat,
    check_release,
    check_version,
)
from agent.update.trust.root import format_time

NOW = time.time()
FACTS = DeviceFacts(
    "cam-001", "default", {"arch": "aarch64", "tensorrt": "10.3.1", "litert": "2.3"}
)


def doc(tmp_path, **changes):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model-bytes")
    spec = BundleSpec(model=model, slot="detector", fleet="default", manifest_version=3, release=2)
    document = manifest_document(spec, 1, NOW, b"{}")
    document.update(changes)
    return document


def parse(document):
    return parse_manifest(canonical_bytes(document))


def test_parses_fields(tmp_path):
    m = parse(doc(tmp_path))
    assert (m.manifest_version, m.release, m.slot, m.fleet, m.backend) == (
        3,
        2,
        "detector",
        "default",
        "tflite",
    )
    assert m.files[0].length == len(b"model-bytes")
    assert m.expires_s > NOW


@pytest.mark.parametrize(
    "raw",
    [b'{"a":1,"a":2}', b'{"a":1.5}', b'{"a":NaN}', b"[]", b'{"_type":"root"}'],
)
def test_strict_json_rejected(raw):
    with pytest.raises(VerificationError) as info:
        parse_manifest(raw)
    assert info.value.reason is Reason.MALFORMED


def test_oversized_payload():
    with pytest.raises(VerificationError) as info:
        parse_manifest(b" " * (65 * 1024))
    assert info.value.reason is Reason.TOO_LARGE


def test_expires_must_be_rfc3339(tmp_path):
    with pytest.raises(VerificationError):
        parse(doc(tmp_path, expires="tomorrow"))


def test_clock_checks():
    assert check_clock(0.0, NOW - 100).reason is Reason.CLOCK_INVALID
    assert check_clock(NOW, NOW - 100) is None


@pytest.mark.parametrize(
    ("compat", "ok"),
    [
        ({"tensorrt": "10.3"}, True),
        ({"tensorrt": "8.6"}, False),
        ({"litert_min": "2.1"}, True),
        ({"litert_min": "2.10"}, False),
        ({"arch": "x86_64"}, False),
        ({"compute_capability": "8.7"}, False),  # unknown on the device: fail closed
    ],
)
def test_compat(tmp_path, compat, ok):
    m = parse(doc(tmp_path, compat=compat))
    assert (check_compat(m, FACTS) is None) is ok


def test_version_floor(tmp_path):
    m = parse(doc(tmp_path))
    assert check_version(m, "a" * 64, None) is Verdict.INSTALL
    assert check_version(m, "a" * 64, Floor(2, "b" * 64)) is Verdict.INSTALL
    assert check_version(m, "a" * 64, Floor(3, "a" * 64)) is Verdict.SAME
    for floor, reason in (
        (Floor(3, "b" * 64), Reason.VERSION_CONFLICT),
        (Floor(4, ""), Reason.ROLLBACK),
    ):
        with pytest.raises(VerificationError) as info:
            check_version(m, "a" * 64, floor)
        assert info.value.reason is reason


def test_release_downgrade(tmp_path):
    m = parse(doc(tmp_path))
    assert check_release(m, Floor(1, "", release=2), downgrade_signed=False) is None
    low = check_release(m, Floor(1, "", release=5), downgrade_signed=False)
    assert low.reason is Reason.DOWNGRADE_NOT_AUTHORISED
    flagged = doc(tmp_path)
    flagged["model"]["downgrade"] = True
    mf = parse(flagged)
    assert (
        check_release(mf, Floor(1, "", release=5), downgrade_signed=False).reason is Reason.UNSIGNED
    )
    assert check_release(mf, Floor(1, "", release=5), downgrade_signed=True) is None


def test_format_time_roundtrip(tmp_path):
    m = parse(doc(tmp_path, expires=format_time(NOW + 60)))
    assert abs(m.expires_s - (NOW + 60)) < 1

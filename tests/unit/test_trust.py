"""Root metadata and rotation: the python-tuf key-rotation table, ported."""

from __future__ import annotations

import time

import pytest

from agent.errors import Reason, VerificationError
from agent.fleet.keys import root_document, sign_root
from agent.update.store.truststore import load_root_file
from agent.update.trust import crypto
from agent.update.trust.root import load_root_bytes, rotate, walk

YEAR = 365 * 86400.0


def keys(n):
    return [crypto.generate_key() for _ in range(n)]


def make_root(version, root_keys, threshold, signers, expires=None):
    other = keys(1)
    doc = root_document(
        version,
        expires if expires is not None else time.time() + YEAR,
        {"root": root_keys, "release": other, "heartbeat": other},
        {"root": threshold, "release": 1, "heartbeat": 1},
    )
    return sign_root(doc, signers)


K = keys(5)
L = keys(5)

# (name, v1 root keys, v1 threshold, v2 root keys, v2 threshold, v2 signers, ok)
ROTATIONS = [
    ("1-of-1 key rotated", K[:1], 1, L[:1], 1, [K[0], L[0]], True),
    ("1-of-1 not signed with old key", K[:1], 1, L[:1], 1, [L[0]], False),
    ("1-of-1 not signed with new key", K[:1], 1, L[:1], 1, [K[0]], False),
    ("3-of-5 one key rotated", K[:5], 3, [*K[:4], L[0]], 3, [*K[:3], L[0]], True),
    ("3-of-5 all keys rotated", K[:5], 3, L[:5], 3, [*K[:3], *L[:3]], True),
    ("3-of-5 all rotated, old threshold missed", K[:5], 3, L[:5], 3, [*K[:2], *L[:3]], False),
    ("threshold raised, new threshold met", K[:3], 1, K[:3], 3, K[:3], True),
    ("threshold raised, new threshold missed", K[:3], 1, K[:3], 3, K[:2], False),
    ("threshold lowered, old threshold missed", K[:3], 3, K[:3], 1, K[:1], False),
]


@pytest.mark.parametrize("row", [pytest.param(row[1:], id=row[0]) for row in ROTATIONS])
def test_rotation_table(row):
    old_keys, old_t, new_keys, new_t, signers, ok = row
    v1 = load_root_bytes(make_root(1, old_keys, old_t, old_keys))
    data = make_root(2, new_keys, new_t, signers)
    if ok:
        assert rotate(v1, data).version == 2
    else:
        with pytest.raises(VerificationError) as info:
            rotate(v1, data)
        assert info.value.reason is Reason.UNSIGNED


def test_three_of_five_all_rotated_with_intermediate_step():
    v1 = load_root_bytes(make_root(1, K, 3, K))
    mid = [*K[:2], *L[:3]]
    v2 = make_root(2, mid, 3, [*K[:3], *L[:3]])
    v3 = make_root(3, L, 3, [*L[:3]])
    assert walk(v1, [v2, v3], time.time()).version == 3


def test_version_must_be_exactly_next():
    v1 = load_root_bytes(make_root(1, K[:1], 1, K[:1]))
    for version in (1, 3):
        with pytest.raises(VerificationError) as info:
            rotate(v1, make_root(version, K[:1], 1, K[:1]))
        assert info.value.reason is Reason.ROLLBACK


def test_duplicate_signature_counts_once():
    data = make_root(1, K[:2], 2, [K[0], K[0]])
    with pytest.raises(VerificationError) as info:
        load_root_bytes(data)
    assert info.value.reason is Reason.UNSIGNED


def test_intermediate_expiry_ignored_final_must_be_fresh():
    v1 = load_root_bytes(make_root(1, K[:1], 1, K[:1]))
    stale = make_root(2, K[:1], 1, K[:1], expires=time.time() - 10)
    fresh = make_root(3, K[:1], 1, K[:1])
    assert walk(v1, [stale, fresh], time.time()).version == 3
    with pytest.raises(VerificationError) as info:
        walk(v1, [stale], time.time())
    assert info.value.reason is Reason.EXPIRED


def test_hop_limit():
    v1 = load_root_bytes(make_root(1, K[:1], 1, K[:1]))
    with pytest.raises(VerificationError) as info:
        walk(v1, [b"{}"] * 5, time.time(), max_hops=4)
    assert info.value.reason is Reason.TOO_LARGE


def test_load_root_file_errors(tmp_path):
    with pytest.raises(VerificationError) as info:
        load_root_file(tmp_path / "missing.json")
    assert info.value.reason is Reason.TRUST_STATE_CORRUPT
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (600 * 1024))
    with pytest.raises(VerificationError) as info:
        load_root_file(big)
    assert info.value.reason is Reason.TOO_LARGE
    good = tmp_path / "root.json"
    good.write_bytes(make_root(1, K[:2], 2, K[:2]))
    root = load_root_file(good)
    assert (root.version, root.role("root").threshold) == (1, 2)

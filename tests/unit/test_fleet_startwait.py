"""The chunk server's start wait as a pure decision: hold while targeted devices arrive."""

from __future__ import annotations

import pytest

from agent.fleet.startwait import StartWait, start_hold_until

WAIT = StartWait(quiet_s=0.3, max_s=4.0)
TARGETS = frozenset({"a", "b", "c"})


def test_every_targeted_device_asking_starts_at_once() -> None:
    asks = {"a": 10.0, "b": 10.05, "c": 10.1}
    assert start_hold_until(TARGETS, asks, 10.1, WAIT) is None


def test_no_targets_or_no_asks_do_not_wait() -> None:
    assert start_hold_until(frozenset(), {"a": 10.0}, 10.0, WAIT) is None  # serve: unknown
    assert start_hold_until(TARGETS, {}, 10.0, WAIT) is None  # nothing asked, nothing held


def test_steady_arrivals_extend_the_wait_past_the_first_quiet_period() -> None:
    # One new device every 0.2 s: each arrival moves the start to its time + quiet.
    assert start_hold_until(TARGETS, {"a": 10.0}, 10.1, WAIT) == pytest.approx(10.3)
    asks = {"a": 10.0, "b": 10.2}
    assert start_hold_until(TARGETS, asks, 10.35, WAIT) == pytest.approx(10.5)


def test_a_gap_longer_than_quiet_starts() -> None:
    asks = {"a": 10.0, "b": 10.2}  # c is offline
    assert start_hold_until(TARGETS, asks, 10.49, WAIT) == pytest.approx(10.5)
    assert start_hold_until(TARGETS, asks, 10.5, WAIT) is None


def test_the_cap_from_the_first_ask_ends_even_steady_arrivals() -> None:
    targets = frozenset(f"d{i}" for i in range(100))
    # A new device every 0.2 s for 5 s, one target never comes: the cap (4 s) decides.
    asks = {f"d{i}": 10.0 + 0.2 * i for i in range(26)}
    assert start_hold_until(targets, asks, 13.9, WAIT) == pytest.approx(14.0)
    assert start_hold_until(targets, asks, 14.0, WAIT) is None


def test_only_targeted_arrivals_extend_the_wait() -> None:
    asks = {"a": 10.0, "x": 10.25}  # x is not targeted by this publication
    assert start_hold_until(TARGETS, asks, 10.2, WAIT) == pytest.approx(10.3)
    assert start_hold_until(TARGETS, asks, 10.3, WAIT) is None
    # Only an untargeted device asked so far: the quiet period runs from its ask.
    assert start_hold_until(TARGETS, {"x": 10.0}, 10.1, WAIT) == pytest.approx(10.3)


def test_a_server_of_a_share_group_does_not_wait() -> None:
    # It sees only its share of the askers, so "every target listens" never shows.
    assert start_hold_until(TARGETS, {"a": 10.0}, 10.0, WAIT, shared=True) is None


def test_quiet_as_long_as_the_cap_is_the_old_fixed_wait() -> None:
    fixed = StartWait(quiet_s=0.5, max_s=0.5)
    assert start_hold_until(TARGETS, {"a": 10.0, "b": 10.4}, 10.45, fixed) == pytest.approx(10.5)
    assert start_hold_until(TARGETS, {"a": 10.0, "b": 10.4}, 10.5, fixed) is None


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="quiet_s"):
        StartWait(quiet_s=-1.0)

from __future__ import annotations

from agent.fsutil import atomic_write_bytes, atomic_write_json, remove_stale_temps
from agent.timeguard import (
    BUILD_FLOOR_WALL_S,
    clock_is_plausible,
    read_last_known_good,
    record_good_time,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_bytes(target, b"second", mode=0o600)
    assert target.read_bytes() == b"second"
    assert oct(target.stat().st_mode & 0o777) == oct(0o600)
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]


def test_stale_temps_are_pruned(tmp_path):
    (tmp_path / ".state.json.abc.tmp").write_bytes(b"torn")
    (tmp_path / "keep.json").write_bytes(b"{}")
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]


def test_last_known_good_never_moves_back(tmp_path):
    assert read_last_known_good(tmp_path) is None
    assert record_good_time(tmp_path, BUILD_FLOOR_WALL_S + 100) == BUILD_FLOOR_WALL_S + 100
    assert record_good_time(tmp_path, BUILD_FLOOR_WALL_S + 50) == BUILD_FLOOR_WALL_S + 100
    assert clock_is_plausible(BUILD_FLOOR_WALL_S + 200, tmp_path)
    assert not clock_is_plausible(BUILD_FLOOR_WALL_S + 99, tmp_path)
    assert not clock_is_plausible(0.0, tmp_path)  # a board that booted at 1970


def test_corrupt_time_file_reads_as_unknown(tmp_path):
    (tmp_path / "last_known_good_time.json").write_text("{not json")
    assert read_last_known_good(tmp_path) is None

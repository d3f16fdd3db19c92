from __future__ import annotations

from agent.uplink.topics import Topics, is_valid_name


def test_contract_topics() -> None:
    t = Topics("ea/v1", "cam-001", "north")
    assert t.state == "ea/v1/d/cam-001/state"
    assert t.health == "ea/v1/d/cam-001/health"
    assert t.stats == "ea/v1/d/cam-001/m/stats"
    assert t.detection == "ea/v1/d/cam-001/e/detection"
    assert t.alarm("overheat") == "ea/v1/d/cam-001/a/overheat"
    assert t.op("restart", "42") == "ea/v1/d/cam-001/op/restart/42"
    assert t.cmd_filter == "ea/v1/d/cam-001/cmd/+/+"
    assert t.fleet_topic("heartbeat") == "ea/v1/f/north/heartbeat"


def test_parse_cmd_round_trip_and_rejects() -> None:
    t = Topics("ea/v1", "cam-001")
    assert t.parse_cmd(t.cmd("diag", "abc")) == ("diag", "abc")
    assert t.parse_cmd("ea/v1/d/cam-002/cmd/diag/abc") is None
    assert t.parse_cmd("ea/v1/d/cam-001/cmd/diag") is None
    assert t.parse_cmd("ea/v1/d/cam-001/op/diag/abc") is None


def test_valid_names() -> None:
    assert is_valid_name("overheat")
    assert not is_valid_name("a/b")
    assert not is_valid_name("#")
    assert not is_valid_name("")

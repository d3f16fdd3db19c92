"""Home Assistant discovery's pure parts: off by default, strict config, ids, update state."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.config.homeassistant import HomeAssistantConfig
from agent.config.root import AgentConfig
from agent.uplink.homeassistant import discovery, object_id, update_payload
from agent.uplink.topics import Topics


def test_off_by_default_and_strict():
    assert AgentConfig().mqtt.homeassistant.enabled is False
    with pytest.raises(ValidationError):
        HomeAssistantConfig(enabled=True, prefix="ha")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="labels"):
        HomeAssistantConfig(labels=["person' }}{{ 1"])
    with pytest.raises(ValidationError, match="wildcards"):
        HomeAssistantConfig(discovery_prefix="home/#")


def test_object_ids_are_safe_topic_levels():
    assert object_id("cam-001") == "cam-001"
    assert object_id("gate.cam.2") == "gate_cam_2"
    assert object_id("+") == "x"


def test_update_state_installed_versus_latest():
    never = {"active": None, "manifest_version": None}
    assert update_payload("detector", never) == {
        "installed_version": "shipped",
        "latest_version": "shipped",
        "title": "detector model",
    }
    offered = {"active": {"manifest_version": 3, "release": 7}, "manifest_version": 4}
    assert update_payload("detector", offered) == {
        "installed_version": "v3",
        "latest_version": "v4",
        "title": "detector model",
        "release_summary": "release 7",
    }


def test_device_ids_with_odd_characters_give_valid_discovery_topics():
    config = AgentConfig.model_validate(
        {"device": {"id": "gate.cam.2"}, "mqtt": {"homeassistant": {"labels": ["car"]}}}
    )
    configs = discovery(config, Topics("ea/v1", "gate.cam.2"), ["detector"])
    assert "homeassistant/binary_sensor/gate_cam_2/present_car/config" in configs
    assert "homeassistant/update/gate_cam_2/model_detector/config" in configs
    for doc in configs.values():
        assert doc["availability"][0]["topic"] == "ea/v1/d/gate.cam.2/state"

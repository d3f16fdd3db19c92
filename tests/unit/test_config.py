from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.config import AgentConfig, known_profiles, load_config, load_profile, redacted_dump
from agent.config.base import resolve_secret
from agent.errors import ConfigError, ProfileNotFoundError, SecretError

CONTRACT_EXAMPLE = """
[device]
id = "cam-001"
fleet = "default"
profile = "x86-gateway"

[mqtt]
url = "mqtt://127.0.0.1:1883"
username = ""
password = ""
ca = ""
topic_root = "ea/v1"

[storage]
state_dir = "/var/lib/edge-agent"

[trust]
root = "/etc/edge-agent/trust/root.json"

[[cameras]]
name = "door"
source = "file:/srv/clips/door.mp4"
fps = 15
loop = false

[[models]]
slot = "detector"
path = "/usr/share/edge-agent/models/face_detection_short_range.tflite"
backend = "tflite"
decoder = "blazeface"
cameras = ["door"]
threshold = 0.6
"""


def test_contract_example_is_valid(write_config, clean_env):
    loaded = load_config(write_config(CONTRACT_EXAMPLE), environ={})
    cfg = loaded.config
    assert cfg.device.id == "cam-001"
    assert cfg.cameras[0].name == "door"
    assert cfg.models[0].decoder == "blazeface"
    assert cfg.board.name == "x86-gateway"
    assert cfg.backend_for(cfg.models[0]) == "tflite"


def test_every_field_has_a_default_and_description():
    def walk(model: type) -> list[str]:
        missing = []
        for name, info in model.model_fields.items():  # type: ignore[attr-defined]
            if info.is_required():
                missing.append(f"{model.__name__}.{name} has no default")
            if not info.description:
                missing.append(f"{model.__name__}.{name} has no description")
            annotation = info.annotation
            inner = getattr(annotation, "__args__", (annotation,))
            for sub in inner:
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    missing += walk(sub)
        return missing

    assert walk(AgentConfig) == []


def test_precedence_profile_file_env_flags(write_config):
    path = write_config(
        """
        [device]
        profile = "rpi5"
        [mqtt]
        url = "mqtt://file-host:1883"
        keepalive_s = 40
        [board]
        inference_threads = 3
        """
    )
    # Profile alone (rpi5: 4 threads) is overridden by the file (3).
    cfg = load_config(path, environ={}).config
    assert cfg.board.inference_threads == 3
    assert cfg.board.arch == "aarch64"  # from the profile, untouched by the file
    assert cfg.mqtt.url == "mqtt://file-host:1883"

    env = {"EDGE_AGENT__MQTT__URL": "mqtt://env-host:1883", "EDGE_AGENT__MQTT__KEEPALIVE_S": "50"}
    cfg = load_config(path, environ=env).config
    assert cfg.mqtt.url == "mqtt://env-host:1883"
    assert cfg.mqtt.keepalive_s == 50  # parsed as a TOML integer

    cfg = load_config(path, environ=env, assignments=["mqtt.url=mqtt://flag-host:1883"]).config
    assert cfg.mqtt.url == "mqtt://flag-host:1883"
    assert cfg.mqtt.keepalive_s == 50


def test_env_can_override_list_items_by_index(write_config):
    path = write_config(CONTRACT_EXAMPLE)
    cfg = load_config(path, environ={"EDGE_AGENT__CAMERAS__0__FPS": "5"}).config
    assert cfg.cameras[0].fps == 5
    assert cfg.cameras[0].name == "door"


def test_validation_lists_every_error_with_source_path_and_value(write_config):
    path = write_config(
        """
        [device]
        id = "bad id with spaces"
        [mqtt]
        url = "http://nope"
        [[cameras]]
        name = "door"
        source = "file:/x.mp4"
        fps = -3
        colour = "red"
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"EDGE_AGENT__MQTT__KEEPALIVE_S": "1"})
    by_key = {issue.key_path: issue for issue in caught.value.issues}
    assert set(by_key) == {
        "device.id",
        "mqtt.url",
        "cameras[0].fps",
        "cameras[0].colour",
        "mqtt.keepalive_s",
    }
    assert by_key["cameras[0].fps"].source == str(path)
    assert by_key["cameras[0].fps"].value == "-3"
    assert "greater than 0" in by_key["cameras[0].fps"].message
    assert by_key["cameras[0].colour"].message == "unknown key 'colour'"
    assert by_key["mqtt.keepalive_s"].source == "env:EDGE_AGENT__MQTT__KEEPALIVE_S"


def test_cross_checks_report_unknown_camera(write_config):
    path = write_config(
        """
        [[cameras]]
        name = "door"
        source = "v4l2:/dev/video0"
        [[models]]
        slot = "detector"
        cameras = ["garage"]
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "unknown cameras: garage" in caught.value.issues[0].message


def test_secret_is_redacted_in_dump_and_errors(write_config, tmp_path):
    secret_file = tmp_path / "pw"
    secret_file.write_text("s3cret-value\n")
    path = write_config(
        f"""
        [mqtt]
        username = "dev"
        password = "file:{secret_file}"
        key_password = "inline-passphrase"
        """
    )
    cfg = load_config(path, environ={}).config
    dumped = json.dumps(redacted_dump(cfg))
    assert "s3cret" not in dumped
    assert "inline-passphrase" not in dumped
    assert str(secret_file) not in dumped
    assert "inline-passphrase" not in repr(cfg)
    assert resolve_secret(cfg.mqtt.password, "mqtt.password") == "s3cret-value"
    assert resolve_secret(cfg.mqtt.key_password, "mqtt.key_password") == "inline-passphrase"

    bad = write_config("[mqtt]\npassword = 12345678\n", name="bad.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(bad, environ={})
    issue = caught.value.issues[0]
    assert issue.key_path == "mqtt.password"
    assert "12345678" not in issue.render()


def test_missing_secret_file_names_key_not_value(tmp_path):
    with pytest.raises(SecretError) as caught:
        resolve_secret(SecretStr(f"file:{tmp_path}/absent"), "mqtt.password")
    assert caught.value.key_path == "mqtt.password"
    assert "absent" in str(caught.value)


def test_unknown_profile_lists_known_ones(write_config):
    path = write_config('[device]\nprofile = "toaster"\n')
    with pytest.raises(ProfileNotFoundError) as caught:
        load_config(path, environ={})
    assert "toaster" in str(caught.value)
    for name in ("jetson-orin-nano", "jetson-nano", "rpi5", "rpi4", "x86-gateway"):
        assert name in caught.value.known


def test_profile_name_cannot_escape_the_directory(write_config):
    path = write_config('[device]\nprofile = "../pyproject"\n')
    with pytest.raises(ProfileNotFoundError):
        load_config(path, environ={})


@pytest.mark.parametrize("name", ["jetson-orin-nano", "jetson-nano", "rpi5", "rpi4", "x86-gateway"])
def test_required_profiles_validate_and_differ(name):
    assert name in known_profiles()
    cfg = AgentConfig.model_validate(load_profile(name))
    if name.startswith("jetson"):
        assert cfg.board.default_backend == "tensorrt"
        assert cfg.board.accelerator == "jetson-gpu"
        assert "nvarguscamerasrc" in cfg.board.csi_pipeline
        assert cfg.board.gpu_device_paths
    if name.startswith("rpi"):
        assert cfg.board.default_backend == "tflite"
        assert "libcamerasrc" in cfg.board.csi_pipeline
        assert cfg.board.throttle_path
    if cfg.board.csi_pipeline:
        assert cfg.board.csi_pipeline.endswith("appsink drop=true max-buffers=1 sync=false")


def test_all_profile_files_validate():
    for name in known_profiles():
        AgentConfig.model_validate(load_profile(name))


def test_toml_syntax_error_is_a_config_error(write_config):
    path = write_config("[mqtt\nurl = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "not valid TOML" in str(caught.value)


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", environ={})


def test_bad_override_syntax(write_config):
    path = write_config("")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(path, environ={}, assignments=["mqtt.url"])
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"EDGE_AGENT__CAMERAS__3__FPS": "5"})
    assert caught.value.issues[0].source == "env:EDGE_AGENT__CAMERAS__3__FPS"

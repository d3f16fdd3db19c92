"""diag against real parts: the sample clip, the sample model, a real Mosquitto, real TLS certs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import LoadedConfig, load_config
from agent.diag.broker import check_tls
from agent.diag.report import Status
from agent.diag.runner import DiagOptions, run_checks
from agent.timeguard import record_good_time
from tests.support.mosquitto import MosquittoBroker, make_tls_files

OPTS = DiagOptions(camera_window_s=1.0, network_timeout_s=3.0)


def config_text(
    state: Path, clip: Path | str, model: Path | str, url: str, extra_mqtt: str = ""
) -> str:
    return f"""
[device]
id = "cam-001"
[storage]
state_dir = "{state}"
min_free_mb = 1
[mqtt]
url = "{url}"
{extra_mqtt}
[trust]
root = "{state}/root.json"
[[cameras]]
name = "door"
source = "file:{clip}"
fps = 15
loop = true
[[models]]
slot = "detector"
path = "{model}"
"""


def load(write_config, text: str) -> LoadedConfig:
    return load_config(write_config(text))


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.mark.broker
def test_healthy_device(  # noqa: PLR0917 - pytest fixtures
    write_config, clean_env, state, sample_clip, short_range_model, mosquitto
):
    loaded = load(write_config, config_text(state, sample_clip, short_range_model, mosquitto.url))
    checks = by_name(run_checks(loaded, options=OPTS))
    for name in ("config", "disk", "camera:door", "model:detector", "broker", "update"):
        assert checks[name].status is Status.OK, checks[name]
    cam = checks["camera:door"]
    assert cam.data["frames"] >= 5
    assert cam.data["shape"][:2] == [480, 640]
    model = checks["model:detector"]
    assert model.data["runtime"].startswith("ai-edge-litert")
    assert model.data["origin"] == "config"
    assert model.data["input"] == [1, 128, 128, 3]
    assert "CONNACK accepted" in checks["broker"].detail
    assert checks["tls"].status is Status.OK  # plaintext, but to this host (loopback)
    assert "loopback" in checks["tls"].detail
    assert checks["trust"].status is Status.FAIL  # none provisioned in this state dir


@pytest.mark.broker
def test_broken_device_reports_each_fault(  # noqa: PLR0917 - pytest fixtures
    write_config, clean_env, state, tmp_path, short_range_model, mosquitto
):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(short_range_model.read_bytes()[:4096])
    port = mosquitto.port
    mosquitto.stop()  # the broker is gone
    record_good_time(state, time.time() + 7200)  # clock two hours behind
    text = config_text(state, tmp_path / "missing.mp4", corrupt, f"mqtt://127.0.0.1:{port}")
    report = run_checks(load(write_config, text), options=OPTS)
    checks = by_name(report)
    assert checks["camera:door"].status is Status.FAIL
    assert "missing.mp4" in checks["camera:door"].detail
    assert checks["model:detector"].status is Status.FAIL
    assert checks["broker"].status is Status.FAIL
    assert "refused" in checks["broker"].detail.lower()
    assert checks["clock"].status is Status.FAIL
    assert report.exit_code == 2
    fails = report.code.split("-")[1]
    for letter in "BKMV":
        assert letter in fails


def test_missing_model_file(write_config, clean_env, state, sample_clip, tmp_path):
    text = config_text(state, sample_clip, tmp_path / "nope.tflite", "mqtt://127.0.0.1:1")
    report = run_checks(load(write_config, text), ["model"], options=OPTS)
    (model,) = report.checks
    assert model.status is Status.FAIL
    assert "missing" in model.detail
    assert report.code == "2-M-0"


def test_camera_that_ends_immediately_warns(write_config, clean_env, state, tmp_path, images_dir):
    one = tmp_path / "one"
    one.mkdir()
    first = min(p for p in images_dir.iterdir() if p.suffix in (".png", ".jpg"))
    (one / first.name).write_bytes(first.read_bytes())
    text = config_text(state, "x", "y", "mqtt://127.0.0.1:1").replace(
        'source = "file:x"\nfps = 15\nloop = true', f'source = "images:{one}"\nfps = 15'
    )
    (cam,) = run_checks(load(write_config, text), ["camera"], options=OPTS).checks
    assert cam.status is Status.WARN
    assert "ended" in cam.detail


def tls_broker(tmp_path: Path, name: str, **cert_args: Any) -> MosquittoBroker:
    tls = make_tls_files(tmp_path / f"tls-{name}", **cert_args)
    return MosquittoBroker(tmp_path / f"broker-{name}", tls=tls)


@pytest.fixture
def started() -> Iterator[list[MosquittoBroker]]:
    brokers: list[MosquittoBroker] = []
    yield brokers
    for broker in brokers:
        broker.stop()


@pytest.mark.broker
@pytest.mark.parametrize(
    ("cert_args", "status", "words"),
    [
        ({"days": 365}, Status.OK, "valid until"),
        ({"days": 10}, Status.WARN, "expires in"),
        ({"days": -1, "start_days_ago": 30}, Status.FAIL, "expired"),
    ],
)
def test_tls_certificate_expiry(  # noqa: PLR0917 - pytest fixtures
    write_config, clean_env, state, tmp_path, started, cert_args, status, words
):
    broker = tls_broker(tmp_path, "b", **cert_args)
    broker.start()
    started.append(broker)
    assert broker.tls is not None
    mqtt = f'ca = "{broker.tls.ca}"'
    loaded = load(write_config, config_text(state, "x", "y", broker.url, mqtt))
    report = run_checks(loaded, ["tls", "broker"], options=OPTS)
    checks = by_name(report)
    assert checks["tls"].status is status, checks["tls"]
    assert words in checks["tls"].detail
    expected_broker = Status.FAIL if status is Status.FAIL else Status.OK
    assert checks["broker"].status is expected_broker, checks["broker"]


@pytest.mark.broker
def test_tls_client_certificate_expiry_is_checked(mosquitto_tls, clean_env, tmp_path):
    from agent.config import MqttConfig

    tls = mosquitto_tls.tls
    short = make_tls_files(tmp_path / "client-short", days=5)
    cfg = MqttConfig(
        url=mosquitto_tls.url,
        ca=str(tls.ca),
        cert=str(short.client_cert),
        key=str(short.client_key),
    )
    result = check_tls(cfg, timeout_s=3.0)
    assert result.status is Status.WARN
    assert "client certificate client.pem expires in" in result.detail


@pytest.mark.broker
def test_tls_wrong_ca_fails(mosquitto_tls, clean_env, tmp_path):
    from agent.config import MqttConfig

    other = make_tls_files(tmp_path / "other")
    result = check_tls(MqttConfig(url=mosquitto_tls.url, ca=str(other.ca)), timeout_s=3.0)
    assert result.status is Status.FAIL
    assert "verification failed" in result.detail

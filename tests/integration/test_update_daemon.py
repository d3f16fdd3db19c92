"""A model update over MQTT to a RUNNING daemon: real pipeline on the sample clip, real broker.

The daemon (``Supervisor``) keeps producing detections while ``edge-fleet publish`` (in
process) delivers a signed bundle: the op state reaches ``successful`` and ``update status``
shows the new version, or, for a validly signed bundle whose model file is corrupt, the live
trial fails, the slot is rolled back and the old model keeps serving.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main as agent_main
from agent.config import load_config
from agent.daemon.supervisor import Supervisor
from agent.fleet.bundle import BundleSpec, create_bundle
from agent.fleet.cli import main as fleet_main
from agent.fleet.mqttclient import FleetClient
from agent.uplink.topics import Topics
from tests.support.daemon_proc import door_camera
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
DEVICE = "cam-001"
FLEET = "f1"
TOPICS = Topics("ea/v1", DEVICE, FLEET)
# The sample clip shows a face for 3 s out of every 7 s at most 4 s apart, so any window
# longer than that holds detections; the trial is made longer than that gap.
TRIAL_S = 5


@dataclass
class Watch:
    """Everything the daemon publishes, with the monotonic time it arrived."""

    client: FleetClient
    messages: list[tuple[float, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), topic, payload))

    def on(self, topic: str) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(t, json.loads(p)) for t, tp, p in self.messages if tp == topic and p]

    def detections(self) -> list[tuple[float, dict[str, Any]]]:
        return self.on(TOPICS.detection)

    def ops(self, dep: str) -> list[tuple[float, dict[str, Any]]]:
        return self.on(f"{TOPICS.base}/op/model_update/{dep}")


@pytest.fixture
def daemon(
    *,
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    keys: Path,
    write_config: Callable[[str], Path],
    sample_clip: Path,
    short_range_model: Path,
) -> Iterator[tuple[Supervisor, Path, Watch]]:
    cfg = write_config(
        f"""
        [device]
        id = "{DEVICE}"
        fleet = "{FLEET}"
        [mqtt]
        url = "{mosquitto.url}"
        reconnect_min_s = 0.2
        reconnect_max_s = 1.0
        [storage]
        state_dir = "{tmp_path / "state"}"
        [trust]
        root = "{keys / "root.json"}"
        [control]
        socket_path = "{tmp_path / "run" / "control.sock"}"
        [outbox]
        batch_interval_s = 0.1
        {door_camera(sample_clip, short_range_model)}
        """
    )
    watch = Watch(FleetClient(mosquitto.url).connect())
    watch.client.subscribe(f"{TOPICS.base}/#", watch.on_message)
    sup = Supervisor(load_config(cfg, environ={}))
    runner = threading.Thread(target=sup.run, name="test-daemon", daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: len(watch.detections()) >= 2, 60), "no detections before update"
        yield sup, cfg, watch
    finally:
        sup.stop_event.set()
        runner.join(30)
        watch.client.close()
    assert not runner.is_alive()


def bundle(keys: Path, out: Path, model: Path, version: int, **changes: Any) -> Path:
    """A signed bundle for this device's detector slot; ``changes``: other BundleSpec fields."""
    fields: dict[str, Any] = {
        "health": {"trial_s": TRIAL_S},
        "chunk_size": 16384,  # several chunks even for the small sample model
        **changes,
    }
    spec = BundleSpec(
        model=model,
        slot="detector",
        fleet=FLEET,
        manifest_version=version,
        release=version,
        devices=[DEVICE],
        **fields,
    )
    create_bundle(spec, keys, out)
    return out


def publish(broker: MosquittoBroker, bundle_dir: Path) -> tuple[int, dict[str, Any]]:
    code = fleet_main(["publish", str(bundle_dir), "--broker", broker.url, "--timeout", "90"])
    return code, {}


def update_status(cfg: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert agent_main(["update", "status", "--json", "--config", str(cfg)]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


def assert_seq_increasing(events: list[tuple[float, dict[str, Any]]]) -> None:
    seqs = [doc["seq"] for _, doc in events]
    assert len(set(seqs)) == len(seqs), "duplicate detection seq"
    assert sorted(seqs) == seqs or len(seqs) < 2, "seq not increasing"


def deployment_id(bundle_dir: Path) -> str:
    from agent.fleet.served import load_bundle

    return load_bundle(bundle_dir).deployment_id


def test_update_to_running_daemon_keeps_detecting(
    *,
    daemon: tuple[Supervisor, Path, Watch],
    mosquitto: MosquittoBroker,
    keys: Path,
    tmp_path: Path,
    short_range_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sup, cfg, watch = daemon
    # The first birth (before the pipeline starts) already names the slot's model file; the
    # retained state is re-published with the loaded model's details once it is up.
    births = [d for _, d in watch.on(TOPICS.state) if d.get("online")]
    assert births[0]["models"]["detector"]["path"] == str(short_range_model)
    assert wait_for(
        lambda: "runtime" in watch.on(TOPICS.state)[-1][1]["models"].get("detector", {}), 10
    ), watch.on(TOPICS.state)
    new = bundle(keys, tmp_path / "b2", short_range_model, 2)
    dep = deployment_id(new)
    code, _ = publish(mosquitto, new)
    assert code == 0, watch.ops(dep)[-3:]
    ops = watch.ops(dep)
    statuses = [d["status"] for _, d in ops]
    assert statuses[0] == "downloading"
    assert "installing" in statuses
    assert statuses[-1] == "successful"
    versions = [d["status_version"] for _, d in ops]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)

    status = update_status(cfg, capsys)
    slot = status["slots"]["detector"]
    assert slot["active"]["manifest_version"] == 2
    assert slot["active"]["release"] == 2
    assert slot["last_result"]["outcome"] == "committed"

    started = ops[0][0]
    finished = ops[-1][0]
    during = [e for e in watch.detections() if started <= e[0] <= finished]
    assert during, f"no detection during the update ({finished - started:.1f} s)"
    assert wait_for(lambda: any(t > finished for t, _ in watch.detections()), 20)
    assert_seq_increasing(watch.detections())
    # The model now serving is the installed version, and the birth says so.
    assert sup.pipeline is not None
    serving = sup.pipeline.model_info()["detector"]["path"]
    assert str(tmp_path / "state") in serving
    assert wait_for(
        lambda: watch.on(TOPICS.state)[-1][1]["models"]["detector"]["path"] == serving, 5
    )


def test_corrupt_model_fails_trial_rolls_back_and_old_model_keeps_serving(
    *,
    daemon: tuple[Supervisor, Path, Watch],
    mosquitto: MosquittoBroker,
    keys: Path,
    tmp_path: Path,
    short_range_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sup, cfg, watch = daemon
    assert sup.pipeline is not None
    before = sup.pipeline.model_info()["detector"]["path"]
    bad = tmp_path / "bad" / "detector.tflite"
    bad.parent.mkdir()
    # Validly signed, right length and hash in the manifest, but not a loadable model.
    good = short_range_model.read_bytes()
    bad.write_bytes(good[:64] + os.urandom(len(good) - 64))
    broken = bundle(keys, tmp_path / "b3", bad, 3)
    dep = deployment_id(broken)
    code, _ = publish(mosquitto, broken)
    assert code == 1
    final = watch.ops(dep)[-1][1]
    assert final["status"] == "failed"
    assert final["reason"] == "health_failed"
    assert final["outcome"] == "rolled_back"
    finished = watch.ops(dep)[-1][0]

    status = update_status(cfg, capsys)
    slot = status["slots"]["detector"]
    assert slot["last_result"]["outcome"] == "rolled_back"
    assert slot["last_result"]["reason"] == "health_failed"
    assert not slot["active"] or slot["active"].get("manifest_version") != 3
    assert sup.pipeline.model_info()["detector"]["path"] == before
    # Detections go on with the old model, seq still increasing.
    count = len(watch.detections())
    assert wait_for(lambda: len(watch.detections()) >= count + 2, 30), "detections stopped"
    assert any(t > finished for t, _ in watch.detections())
    assert_seq_increasing(watch.detections())

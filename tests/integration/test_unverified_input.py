"""Unsigned noise on the update topics must not disturb signed work (issue 18, item 2).

A real Mosquitto, a real device (link + installer + update service) and an attacker
with publish rights but no signing keys: junk on ``deploy/<slot>`` during a signed
transfer, an unsigned envelope that names a real deployment id, and a fuzz run of
garbage manifests. Invariants: the signed transfer finishes, no op state is written
for unverified bytes, the broker holds a bounded number of retained topics for the
device, memory stays flat; the junk is counted and raises one rate-limited alarm.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.fleet.mqttclient import FleetClient
from agent.fleet.served import load_bundle
from agent.update.trust import crypto
from agent.update.trust.envelope import canonical_bytes, parse_envelope, sign_envelope
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE
from tests.fault.conftest import figure, rss_mb
from tests.integration.test_delivery import (
    FLEET,
    TOPICS,
    Operator,
    make_bundle,
    publish,
    serve,
    start_device,
)
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker
DEPLOY = TOPICS.deploy(FLEET, "detector")
JUNK_INPUTS = 10_000
SETTLE_S = 0.5
RETAINED_BOUND = 8  # state, health, the alarm and a few op states: never one per junk message


def forged(payload: bytes) -> bytes:
    """An envelope of the right shape signed by a key the fleet never trusted."""
    key = crypto.generate_key()
    return sign_envelope(MANIFEST_PAYLOAD_TYPE, payload, [key]).to_bytes()


def retained_device_topics(port: int, device: str, grace_s: float = 1.0) -> dict[str, int]:
    """Every retained message under the device's topics, by subscribing to ``#``."""
    found: dict[str, int] = {}
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain and msg.payload and f"/d/{device}/" in msg.topic:
            with lock:
                found[msg.topic] = len(msg.payload)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="retained-counter")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("#", qos=1)
    client.loop_start()
    try:
        time.sleep(grace_s)
    finally:
        client.loop_stop()
        client.disconnect()
    return found


def test_junk_on_deploy_topic_does_not_abort_a_signed_transfer(
    mosquitto, operator, keys, tmp_path, short_range_model
):
    gate = threading.Event()  # no frame reaches the device until the junk has been seen
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1, chunk_size=8192)
    server, server_stop = serve(operator, bundle, mangle=lambda f: f if gate.is_set() else [])
    device = start_device(mosquitto, keys, tmp_path / "dev")
    try:
        dep = publish(operator, bundle)
        wait_for(lambda: operator.docs("cam-1", dep), timeout_s=10)
        assert operator.docs("cam-1", dep)[-1]["status"] == "downloading"
        payload = parse_envelope(load_bundle(bundle).envelope_bytes, 1 << 20).payload
        for junk in (b"junk", b"{}", forged(payload)):
            operator.client.publish_wait(DEPLOY, junk, retain=True)
            time.sleep(SETTLE_S)  # the device has seen it (it reacts within milliseconds)
        gate.set()
        final = operator.wait_terminal("cam-1", dep, timeout_s=30)
        assert final["status"] == "successful", final
        assert device.installer.store.current_sha("detector") == final["bundle_sha256"]
        assert wait_for(lambda: device.service.unverified.total == 3, timeout_s=5)
    finally:
        device.close()
        server_stop.set()
        server.join()


def test_unsigned_envelope_naming_a_real_deployment_leaves_its_op_state(
    mosquitto, operator, keys, tmp_path, short_range_model
):
    bundle = make_bundle(keys, tmp_path / "b1", short_range_model, 1)
    server, server_stop = serve(operator, bundle)
    device = start_device(mosquitto, keys, tmp_path / "dev")
    try:
        dep = publish(operator, bundle)
        final = operator.wait_terminal("cam-1", dep)
        assert final["status"] == "successful", final
        before = operator.docs("cam-1", dep)
        doc = json.loads(parse_envelope(load_bundle(bundle).envelope_bytes, 1 << 20).payload)
        doc["manifest_version"] = 99  # a "newer" deployment under the same id, unsigned
        attacks = [
            forged(canonical_bytes(doc)),
            json.dumps(  # the genuine payload with its signatures stripped
                {
                    "payloadType": MANIFEST_PAYLOAD_TYPE,
                    "payload": base64.b64encode(canonical_bytes(doc)).decode(),
                    "signatures": [],
                }
            ).encode(),
        ]
        for attack in attacks:
            operator.client.publish_wait(DEPLOY, attack, retain=True)
            time.sleep(SETTLE_S)
        assert operator.docs("cam-1", dep) == before  # nothing new on the real op topic
        retained = json.loads(operator.client.retained(TOPICS.model_update("cam-1", dep)) or b"")
        assert retained["status"] == "successful"
        assert retained["status_version"] == final["status_version"]
        # Counted and alarmed instead (the alarm is rate-limited: it said 1 when raised).
        expected = {"total": 2, "by_reason": {"unsigned": 2}}
        assert wait_for(lambda: device.service.unverified.snapshot() == expected, timeout_s=5)
        alarm = json.loads(operator.client.retained(TOPICS.alarm("cam-1", "unverified_input")))
        assert alarm["count"] == 1
        assert alarm["last_reason"] == "unsigned"
    finally:
        device.close()
        server_stop.set()
        server.join()


def junk_inputs(count: int, genuine: bytes, seed: int = 18) -> list[tuple[str, bytes]]:
    """Garbage manifests: bytes, JSON, envelopes forged under fresh ids, oversize envelopes."""
    rnd = random.Random(seed)
    doc = json.loads(parse_envelope(genuine, 1 << 20).payload)
    out: list[tuple[str, bytes]] = []
    for n in range(count):
        kind = n % 5
        topic = DEPLOY if rnd.random() < 0.7 else TOPICS.deploy(FLEET, f"s{rnd.randrange(50)}")
        if kind == 0:
            data = rnd.randbytes(rnd.randrange(1, 300))
        elif kind == 1:
            data = json.dumps({"payloadType": MANIFEST_PAYLOAD_TYPE, "x": n}).encode()
        elif kind == 2:  # parses, names a fresh deployment id each time, signed by nobody
            edited = {**doc, "deployment_id": f"junk-{n}", "manifest_version": n + 2}
            data = json.dumps(
                {
                    "payloadType": MANIFEST_PAYLOAD_TYPE,
                    "payload": base64.b64encode(canonical_bytes(edited)).decode(),
                    "signatures": [{"keyid": "00" * 32, "sig": "11" * 64}],
                }
            ).encode()
        elif kind == 3:
            data = genuine[: rnd.randrange(len(genuine))]
        else:
            data = b"{" * 200 if n % 10 else b" " * (100 * 1024)  # deep nesting / over the cap
        if n % 97 == 0:
            topic = TOPICS.trust_root(FLEET)  # junk roots too
        out.append((topic, data))
    return out


def fuzz_device(broker: MosquittoBroker, keys: Path, tmp_path: Path, model: Path, n: int) -> None:
    bundle = make_bundle(keys, tmp_path / "b1", model, 1)
    genuine = load_bundle(bundle).envelope_bytes
    client = FleetClient(broker.url).connect()
    operator = Operator(client)
    client.subscribe(TOPICS.model_update_filter(), operator.on_state)
    server, server_stop = serve(operator, bundle)
    device = start_device(broker, keys, tmp_path / "dev")
    try:
        dep = publish(operator, bundle)
        assert operator.wait_terminal("cam-1", dep)["status"] == "successful"
        inputs = junk_inputs(n, genuine)
        warm = inputs[:100]
        for topic, data in warm:
            client.publish(topic, data, qos=1, retain=True)
        time.sleep(SETTLE_S)
        rss_start = rss_mb()
        started = time.monotonic()
        for i, (topic, data) in enumerate(inputs[100:]):
            client.publish(topic, data, qos=1, retain=True)
            if i % 200 == 0:  # paced so the device sees much of it (latest wins per slot)
                time.sleep(0.01)
        client.publish_wait(DEPLOY, b"last junk", retain=True)
        time.sleep(SETTLE_S)
        elapsed = time.monotonic() - started
        rss_end = rss_mb()
        retained = retained_device_topics(broker.port, "cam-1")
        assert len(retained) <= RETAINED_BOUND, (len(retained), sorted(retained)[:10])
        assert not [t for t in retained if "junk-" in t or "rejected-" in t]
        assert rss_end - rss_start < 20.0
        # Only the one signed deployment ever got an op state, and it still says so.
        assert set(operator.states) == {TOPICS.model_update("cam-1", dep)}
        figure(
            f"unverified_fuzz[{n}]",
            seen=device.service.unverified.total,
            by_reason=device.service.unverified.by_reason,
            alarms=device.service.unverified.alarms_published,
            retained_topics=len(retained),
            rss_start_mb=round(rss_start, 1),
            rss_end_mb=round(rss_end, 1),
            seconds=round(elapsed, 1),
        )
        assert device.service.unverified.total > 0
        assert device.service.unverified.alarms_published <= 2  # rate-limited (60 s)
        assert device.installer.store.current_sha("detector") is not None
    finally:
        device.close()
        server_stop.set()
        server.join()
        client.close()


def test_junk_fuzz_keeps_retained_topics_and_memory_bounded(
    mosquitto, keys, tmp_path, short_range_model
):
    # 10,000 junk inputs take ~2 s here: the full figure runs in the normal suite.
    fuzz_device(mosquitto, keys, tmp_path, short_range_model, JUNK_INPUTS)

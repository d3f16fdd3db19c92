"""The delivery benchmark's device harness waits for terminal op states without polling.

A 20 ms poll cost every device process CPU for the whole rollout (the raw fan-out's
subscribers, its baseline, never polled) and ended the e2e measure up to 20 ms late.
"""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace
from typing import Any

from tools.bench_transfer_sim import DeviceBus, DeviceGroup, FanoutHub


class _Client:
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        del topic, payload, qos, retain
        return None


class _Hub:
    client = _Client()


def _state(status: str) -> bytes:
    return json.dumps({"status": status}).encode()


def _counting_group(devices: int) -> tuple[DeviceGroup, list[int]]:
    """A device group without a broker whose ``done`` counts how often the wait looks."""
    group = DeviceGroup.__new__(DeviceGroup)
    group._terminal = threading.Event()
    group.services = []
    group.buses = [DeviceBus(_Hub(), n, group._terminal.set) for n in range(devices)]  # type: ignore[arg-type]
    checks = [0]
    real_done = group.done

    def counting_done() -> bool:
        checks[0] += 1
        return real_done()

    group.done = counting_done  # type: ignore[method-assign]
    return group, checks


def test_group_wait_sleeps_until_every_device_reported_a_terminal_state() -> None:
    group, checks = _counting_group(2)  # no broker: only the waiting is under test
    topic = "ea/v1/d/dev-{}/op/model_update/dep-1"

    def devices() -> None:
        time.sleep(0.05)
        group.buses[0].publish(topic.format(0), _state("downloading"))
        group.buses[0].publish(topic.format(0), _state("successful"))
        time.sleep(0.4)
        group.buses[1].publish(topic.format(1), _state("failed"))

    thread = threading.Thread(target=devices)
    thread.start()
    group.wait(5.0)
    thread.join()
    assert all("successful" in b.phases or "failed" in b.phases for b in group.buses)
    assert checks[0] <= 4  # a look per terminal state (a 20 ms poll: over 20)


def test_report_takes_each_devices_status_from_its_published_terminal_state() -> None:
    """A device process reports before it stops its services (they linger until every
    process has reported), and a service records its result only just after publishing
    the terminal state: the report must not read that list (it said "none", one to six
    devices of 100 per run, for devices that had committed)."""
    group = DeviceGroup.__new__(DeviceGroup)  # no broker: only the report is under test
    group._terminal = threading.Event()
    group.services = [SimpleNamespace(results=[]), SimpleNamespace(results=[])]  # type: ignore[list-item]
    group.buses = [DeviceBus(_Hub(), n, group._terminal.set) for n in range(2)]  # type: ignore[arg-type]
    topic = "ea/v1/d/dev-{}/op/model_update/dep-1"
    group.buses[0].publish(topic.format(0), _state("installing"))
    group.buses[0].publish(topic.format(0), _state("successful"))
    group.buses[1].publish(topic.format(1), _state("failed"))
    assert [d["status"] for d in group.report()] == ["successful", "failed"]


def test_group_wait_does_not_wake_before_a_terminal_state() -> None:
    """Nothing but a terminal op state ends a wait (a 1 s timeout woke each device process
    every second of the rollout: ~19 wake-ups per process at N = 100)."""
    group, checks = _counting_group(1)
    timer = threading.Timer(
        1.2, group.buses[0].publish, ("ea/v1/d/dev-0/op/model_update/d", _state("successful"))
    )
    timer.start()
    group.wait(5.0)
    timer.join()
    assert checks[0] == 2  # before the wait, and once woken by the terminal state


class _SubscribingClient(_Client):
    def __init__(self) -> None:
        self.subscribed: dict[str, Any] = {}

    def subscribe(self, topic_filter: str, callback: Any) -> None:
        self.subscribed[topic_filter] = callback


def test_a_one_device_hub_hands_the_callback_to_the_client_itself() -> None:
    """As on a real device: no fan-out layer (a lock and a list copy per message)."""
    client = _SubscribingClient()
    hub = FanoutHub(client, direct=True)  # type: ignore[arg-type]

    def callback(topic: str, payload: bytes) -> None:
        del topic, payload

    DeviceBus(hub, 0).subscribe("t/#", callback)
    assert client.subscribed["t/#"] is callback

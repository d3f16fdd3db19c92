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

from tools.bench_transfer_sim import DeviceBus, DeviceGroup


class _Client:
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        del topic, payload, qos, retain
        return None


class _Hub:
    client = _Client()


def _state(status: str) -> bytes:
    return json.dumps({"status": status}).encode()


def test_group_wait_sleeps_until_every_device_reported_a_terminal_state() -> None:
    group = DeviceGroup.__new__(DeviceGroup)  # no broker: only the waiting is under test
    group._terminal = threading.Event()
    group.services = []
    group.buses = [DeviceBus(_Hub(), n, group._terminal.set) for n in range(2)]  # type: ignore[arg-type]
    checks = [0]
    real_done = group.done

    def counting_done() -> bool:
        checks[0] += 1
        return real_done()

    group.done = counting_done  # type: ignore[method-assign]
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

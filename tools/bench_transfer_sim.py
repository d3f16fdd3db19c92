"""Simulated devices for tools/bench_transfer.py: real update code, shared MQTT connections.

Each simulated device is a real ``UpdateService`` with its own ``Installer``, state
directory, ``TransferSession``, planner and part files (the production code, unchanged).
Devices of one process share one MQTT connection through ``FanoutHub``: each topic
filter is subscribed once, the broker sends every stream frame once per process and
the hub hands the same bytes to every device subscribed to it. ``fleet`` runs several
such processes (``_devices`` mode) so the devices' CPU work is not serialised by one
interpreter lock.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.fleet.bundle import BundleSpec, create_bundle
from agent.fleet.keys import init_keys
from agent.fleet.mqttclient import FleetClient
from agent.update.store.installer import Installer
from agent.update.store.outcome import InstallResult
from agent.update.store.probe import TrialResult
from agent.update.transfer.service import UpdateService
from agent.update.transfer.settings import ServiceSettings
from agent.update.transfer.wire import Topics
from agent.update.trust.manifest import Manifest
from agent.update.trust.policy import DeviceFacts
from agent.update.trust.verify import Verified

Callback = Callable[[str, bytes], None]
TERMINAL = ("successful", "failed")


class PassProbe:
    def golden(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        del slot, model_path, manifest
        return TrialResult(ok=True)

    def trial(self, slot: str, model_path: Path, manifest: Manifest) -> TrialResult:
        del slot, manifest  # the trial is not what this benchmark measures
        return TrialResult(ok=model_path.is_file(), detail="bench")

    def restored(self, slot: str, model_path: Path | None) -> None:
        del slot, model_path


class DeliveryOnlyInstaller(Installer):
    """The real verify (signature, targeting, floors); ``install`` only confirms the files.

    ``fleet --install skip``: the figure then covers the delivery protocol (manifest,
    chunk transfer, per-chunk and whole-file checks) without the stagings.
    """

    def install(self, verified: Verified, files_dir: Path) -> InstallResult:
        manifest = verified.manifest
        ok = all((files_dir / f.name).stat().st_size == f.length for f in manifest.files)
        outcome = "committed" if ok else "inconsistent"
        return InstallResult(manifest.slot, outcome, None, manifest.manifest_version)


INSTALLERS: dict[str, type[Installer]] = {"real": Installer, "skip": DeliveryOnlyInstaller}


class FanoutHub:
    """Many simulated devices on one MQTT connection: each filter subscribed once."""

    def __init__(self, client: FleetClient, *, direct: bool = False) -> None:
        self.client = client
        # One device in the process: its callbacks go straight to the client, as on a real
        # device (no lock and copy of the callback list per message).
        self.direct = direct
        self._subs: dict[str, dict[int, Callback]] = {}
        self._lock = threading.Lock()

    def add(self, topic_filter: str, owner: int, callback: Callback) -> None:
        if self.direct:
            self.client.subscribe(topic_filter, callback)
            return
        with self._lock:
            first = topic_filter not in self._subs
            self._subs.setdefault(topic_filter, {})[owner] = callback
        if first:
            self.client.subscribe(topic_filter, functools.partial(self._fan, topic_filter))

    def remove(self, topic_filter: str, owner: int) -> None:
        if self.direct:
            self.client.unsubscribe(topic_filter)
            return
        with self._lock:
            callbacks = self._subs.get(topic_filter, {})
            callbacks.pop(owner, None)
            last = topic_filter in self._subs and not callbacks
            if last:
                del self._subs[topic_filter]
        if last:
            self.client.unsubscribe(topic_filter)

    def _fan(self, topic_filter: str, topic: str, payload: bytes) -> None:
        with self._lock:
            callbacks = list(self._subs.get(topic_filter, {}).values())
        for callback in callbacks:
            callback(topic, payload)


class DeviceBus:
    """One simulated device's view of the hub (the ``Bus`` the update service uses)."""

    def __init__(
        self, hub: FanoutHub, owner: int, on_terminal: Callable[[], None] | None = None
    ) -> None:
        self._hub = hub
        self._owner = owner
        self._on_terminal = on_terminal
        self.phases: dict[str, float] = {}  # op status -> first time.monotonic() it was published
        # op status -> this process's CPU seconds then (one device per process: its own CPU).
        self.cpu: dict[str, float] = {}
        self.terminal = ""  # the latest terminal op status published

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object:
        terminal = False
        if "/op/model_update/" in topic:
            status = json.loads(payload).get("status", "")
            self.phases.setdefault(status, time.monotonic())
            self.cpu.setdefault(status, time.process_time())
            terminal = status in TERMINAL
            if terminal:
                self.terminal = status
        info = self._hub.client.publish(topic, payload, qos=qos, retain=retain)
        if terminal and self._on_terminal is not None:
            self._on_terminal()
        return info

    def subscribe(self, topic_filter: str, callback: Callback) -> None:
        self._hub.add(topic_filter, self._owner, callback)

    def unsubscribe(self, topic_filter: str) -> None:
        self._hub.remove(topic_filter, self._owner)


class DeviceGroup:
    """The devices of one process: one connection, one hub, a service per device."""

    def __init__(
        self,
        url: str,
        topics: Topics,
        work: Path,
        names: list[str],
        *,
        keys: Path,
        fleet: str,
        install: str,
        window: int,
    ) -> None:
        self.client = FleetClient(url).connect()
        self.hub = FanoutHub(self.client, direct=len(names) == 1)
        self.stop = threading.Event()
        self.services: list[UpdateService] = []
        self.buses: list[DeviceBus] = []
        # Set on every terminal op state: ``wait`` sleeps on it instead of polling (a 20 ms
        # poll cost the device processes CPU for the whole rollout and made the e2e end up
        # to 20 ms late; the raw fan-out's subscribers never polled).
        self._terminal = threading.Event()
        for owner, name in enumerate(names):
            installer = INSTALLERS[install](
                work / "devices" / name,
                provisioned_root=keys / "root.json",
                facts=DeviceFacts(name, fleet, {}),
                probe=PassProbe(),
            )
            # The daemon's settings (agent/update/transfer/wiring.py): defaults but the window.
            settings = ServiceSettings(name, fleet, window=window)
            bus = DeviceBus(self.hub, owner, self._terminal.set)
            service = UpdateService(bus, installer, topics, settings, self.stop)
            service.start()
            self.buses.append(bus)
            self.services.append(service)

    def done(self) -> bool:
        """Every device has published a terminal op state (its result follows at once)."""
        return all(any(s in b.phases for s in TERMINAL) for b in self.buses)

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # Every terminal op state sets it: no timeout needed (a 1 s one cost each device
            # process ~19 wake-ups in a 7 s rollout at N = 100; the receivers do not poll).
            self._terminal.wait(left)
            self._terminal.clear()

    def close(self) -> None:
        self.stop.set()
        for service in self.services:
            service.join()
        self.client.close()

    def report(self) -> list[dict[str, Any]]:
        """Per device: terminal status and the monotonic time each op status first went out."""
        return [
            {
                # From the published op state: a process reports before it stops its
                # services, and a service appends to ``results`` just after publishing.
                "status": b.terminal or "none",
                "phases": dict(b.phases),
                "cpu": dict(b.cpu),
            }
            for b in self.buses
        ]


def device_process(args: argparse.Namespace) -> None:
    """``_devices`` mode: start devices, say ready, run until they end; one JSON line out."""
    # A sibling in tools/, on the path in this mode (tests import this module as tools.*).
    from bench_transfer_threads import (  # noqa: PLC0415
        count_paho,
        counts_since,
        delta,
        paho_counts,
        snapshot,
    )

    count_paho()
    names = [f"dev-{i}" for i in range(args.first, args.first + args.count)]
    topics = Topics("ea/v1")
    group = DeviceGroup(
        args.url,
        topics,
        args.work,
        names,
        keys=args.keys,
        fleet=args.fleet,
        install=args.install,
        window=args.window,
    )
    time.sleep(0.3)  # subscriptions settled
    cpu_start = time.process_time()
    threads_start, counts_start = snapshot(), paho_counts()
    print("ready", flush=True)
    group.wait(args.timeout)
    threads = delta(threads_start, snapshot())
    counts = counts_since(counts_start)
    # CPU of this process while its devices worked: their threads, the shared MQTT network
    # thread and the fan-out (the wait loop above costs a wake-up every 20 ms).
    cpu_s = time.process_time() - cpu_start
    doc = {"cpu_s": cpu_s, "cpu_start": cpu_start, "threads": threads, "paho": counts}
    doc["devices"] = group.report()
    print(json.dumps(doc), flush=True)
    # Stop and exit only once the benchmark has every process's report (it closes our
    # stdin): a device that finished early would otherwise tear down its services and
    # its interpreter (a full GC of every imported module, ~0.1-0.2 CPU-s under load)
    # on the two shared cores while the other devices still work. A real device keeps
    # running after an update; the raw fan-out's receivers wait the same way.
    sys.stdin.read()
    group.close()


def make_bundle(work: Path, mb: float, chunk_size: int, fleet: str) -> Path:
    """A signed bundle of a random ``mb`` MB model in ``work/bundle``, keys in ``work/keys``."""
    keys = work / "keys"
    init_keys(keys)
    model = work / "model.tflite"
    model.write_bytes(os.urandom(int(mb * 1024 * 1024)))
    spec = BundleSpec(
        model=model,
        slot="detector",
        fleet=fleet,
        manifest_version=1,
        release=1,
        chunk_size=chunk_size,
    )
    create_bundle(spec, keys, work / "bundle")
    return work / "bundle"

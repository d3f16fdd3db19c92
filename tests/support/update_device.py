"""A device process for kill tests: real link, installer and update service until SIGKILL/SIGTERM.

Usage: python -m tests.support.update_device BROKER_URL KEYS_DIR STATE_DIR DEVICE_ID FLEET
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from agent.config.uplink import MqttConfig
from agent.log import configure
from agent.update.store.installer import Installer
from agent.update.store.probe import OfflineProbe
from agent.update.transfer.service import UpdateService
from agent.update.transfer.settings import ServiceSettings
from agent.update.transfer.wire import Topics
from agent.update.trust.policy import DeviceFacts
from agent.uplink.link import Link
from agent.uplink.topics import Topics as LinkTopics


def main(argv: list[str]) -> int:
    url, keys, state, device, fleet = argv
    configure(level="info", fmt="json")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    state_dir = Path(state)
    cfg = MqttConfig(url=url, reconnect_min_s=0.2, reconnect_max_s=1.0)
    link = Link(cfg, LinkTopics("ea/v1", device, fleet), state_dir, stop)
    installer = Installer(
        state_dir,
        provisioned_root=Path(keys) / "root.json",
        facts=DeviceFacts(device, fleet, {}),
        probe=OfflineProbe(),
    )
    installer.recover()
    settings = ServiceSettings(device, fleet, window=8, stall_s=0.6)
    service = UpdateService(link, installer, Topics("ea/v1"), settings, stop)
    link.start()
    service.start()
    stop.wait()
    service.join()
    link.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

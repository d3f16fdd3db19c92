"""Acknowledged outbox rows on a full disk: sent once, deleted once space returns.

The outbox's SQLite file lives on a real 16 MB tmpfs (when this process may mount one;
otherwise the store's delete is made to fail, the seam). Rows are accepted while the
broker is down, the disk fills up, the broker comes up: every row is published and
acknowledged, but SQLite cannot delete it. The publisher must not send those rows again
while the disk stays full, and must delete them once it is not.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from agent.config.uplink import MqttConfig, OutboxConfig
from agent.errors import StorageError
from agent.uplink.classes import MsgClass
from agent.uplink.link import Link
from agent.uplink.outbox import DB_NAME, Outbox
from agent.uplink.outbox_store import OutboxStore
from agent.uplink.publisher import Publisher
from agent.uplink.topics import Topics
from tests.fault.conftest import SmallFs, figure
from tests.integration.mqtt_helpers import Recorder
from tests.support.mosquitto import MosquittoBroker, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker

TOPICS = Topics("ea/v1", "cam-001")
ROWS = 40


def test_acknowledged_rows_are_not_resent_while_deletes_fail(
    small_fs: SmallFs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = small_fs.path / "state"
    state.mkdir()
    broker = MosquittoBroker(tmp_path / "broker", port=free_port())
    stop = threading.Event()
    outbox = Outbox(
        state, OutboxConfig(batch_interval_s=0.05, drain_rate_per_s=500), TOPICS.detection_counts
    )
    cfg = MqttConfig(url=broker.url, reconnect_min_s=0.2, reconnect_max_s=0.5)
    link = Link(cfg, TOPICS, state, stop)
    publisher = Publisher(outbox, link)
    outbox.start()
    link.start()
    publisher.start()
    recorder: Recorder | None = None
    try:
        for seq in range(1, ROWS + 1):
            outbox.put_json(TOPICS.detection, {"seq": seq}, MsgClass.DETECTION)
        assert wait_for(lambda: outbox.store.snapshot()["depth"] == ROWS, 10)
        small_fs.fill()
        if not small_fs.real:
            real_delete = OutboxStore.delete

            def failing(self: OutboxStore, *args: object, **kwargs: object) -> None:
                if small_fs.free_bytes() == 0:
                    raise StorageError("outbox delete failed: database or disk is full")
                real_delete(self, *args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(OutboxStore, "delete", failing)
        broker.start()
        recorder = Recorder(broker.url, TOPICS.detection, client_id="full-disk-recorder")
        assert recorder.wait_for(lambda: len(recorder.on(TOPICS.detection)) >= ROWS, 15)
        time.sleep(1.5)  # thirty publisher ticks with every delete failing
        seqs = [json.loads(p)["seq"] for p in recorder.on(TOPICS.detection)]
        assert sorted(seqs) == list(range(1, ROWS + 1))  # each once: nothing re-sent
        assert outbox.store.snapshot()["depth"] == ROWS  # and nothing deleted yet
        small_fs.release()
        assert wait_for(lambda: outbox.store.snapshot()["depth"] == 0, 10)
        time.sleep(0.3)
        seqs = [json.loads(p)["seq"] for p in recorder.on(TOPICS.detection)]
        assert sorted(seqs) == list(range(1, ROWS + 1))
        figure(
            "outbox_full_disk",
            mode="tmpfs ENOSPC" if small_fs.real else "seam",
            rows=ROWS,
            received=len(seqs),
        )
    finally:
        if recorder is not None:
            recorder.close()
        stop.set()
        publisher.stop(grace_s=0.2)
        outbox.stop()
        link.stop()
        broker.stop()
        small_fs.release()
    with sqlite3.connect(state / DB_NAME) as db:  # the file is sound afterwards
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

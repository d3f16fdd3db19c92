"""Disk fault: the state directory's filesystem fills up under a running agent.

A real Supervisor with the real pipeline (sample clip, real TFLite model) keeps its state
directory on a 16 MB tmpfs; a ballast file then takes every free byte, as a runaway log
would. The agent must keep inferring, raise ``storage_low``, refuse an update with
``insufficient_space`` leaving the active model as it was, and recover by itself once the
ballast is gone. Where this process may not mount (not root), the same test runs on a
plain directory with the free-space seams instead: the alarm and the refusal are then
exercised, the real ENOSPC paths are not (the printed figure says which ran).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.daemon.supervisor import Supervisor
from agent.errors import Reason, UpdateError
from agent.uplink import health
from tests.fault.conftest import SmallFs, figure
from tests.support.daemon_proc import door_camera
from tests.support.mosquitto import free_port
from tests.support.update_fleet import Fleet, install_bundle, make_installer, snapshot
from tests.support.waiting import wait_for


def events(sup: Supervisor) -> int:
    assert sup.pipeline is not None
    # The slot appears once its model has loaded; the pipeline object exists before.
    return int(sup.pipeline.stats_snapshot()["models"].get("detector", {}).get("events", 0))


def accepted(sup: Supervisor) -> int:
    assert sup.outbox is not None
    return int(sup.outbox.snapshot().get("accepted", {}).get("detection", 0))


def test_full_state_disk_keeps_inferring_alarms_refuses_updates_and_recovers(
    tmp_path: Path,
    small_fs: SmallFs,
    *,
    write_config: Callable[[str], Path],
    sample_clip: Path,
    short_range_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not small_fs.real:
        real_usage = shutil.disk_usage

        def seam(path: Any) -> Any:
            usage = real_usage(path)
            return usage._replace(free=small_fs.free_bytes())

        monkeypatch.setattr(health.shutil, "disk_usage", seam)
    state = small_fs.path / "state"
    cfg_path = write_config(
        f"""
        [device]
        id = "cam-001"
        [mqtt]
        url = "mqtt://127.0.0.1:{free_port()}"
        reconnect_max_s = 1.0
        [storage]
        state_dir = "{state}"
        min_free_mb = 4
        [control]
        socket_path = "{tmp_path / "ctl.sock"}"
        [outbox]
        batch_interval_s = 0.1
        [telemetry]
        health_interval_s = 0.2
        stats_interval_s = 0.5
        {door_camera(sample_clip, short_range_model)}
        """
    )
    fleet = Fleet(tmp_path / "fleet", short_range_model)
    installer = make_installer(state, fleet, free_bytes=lambda _p: small_fs.free_bytes())
    assert install_bundle(installer, fleet.bundle()).outcome == "committed"
    update = fleet.bundle(manifest_version=2, release=2)

    sup = Supervisor(load_config(cfg_path, environ={}))
    runner = threading.Thread(target=sup.run, name="fault-daemon", daemon=True)
    runner.start()
    try:
        assert wait_for(lambda: sup.pipeline is not None and events(sup) >= 3, 60)
        assert wait_for(lambda: accepted(sup) >= 3, 10)
        assert sup.alarms is not None
        assert "storage_low" not in sup.alarms.snapshot()

        small_fs.fill()  # --- the disk is full -------------------------------------
        full_at = time.monotonic()
        assert wait_for(lambda: "storage_low" in sup.alarms.snapshot(), 10)  # type: ignore[union-attr]
        alarm_after_s = time.monotonic() - full_at
        status = sup.status()
        assert status["health"]["components"]["storage"]["status"] == "degraded"
        before_events = events(sup)
        assert wait_for(lambda: events(sup) >= before_events + 5, 30), "inference stopped"
        assert sup.outbox is not None
        if small_fs.real:  # SQLite really hit ENOSPC; the writer holds the batch, alive
            assert wait_for(lambda: sup.outbox.storage_failing, 30)  # type: ignore[union-attr]
        models_before = snapshot(state / "models")
        active_before = installer.store.current_model("detector")
        with pytest.raises(UpdateError) as refused:
            install_bundle(installer, update)
        assert refused.value.reason is Reason.INSUFFICIENT_SPACE, refused.value
        assert snapshot(state / "models") == models_before
        assert installer.store.current_model("detector") == active_before
        assert runner.is_alive()
        events_while_full = events(sup) - before_events

        small_fs.release()  # --- space returns ---------------------------------------
        freed_at = time.monotonic()
        assert wait_for(lambda: "storage_low" not in sup.alarms.snapshot(), 10)  # type: ignore[union-attr]
        cleared_after_s = time.monotonic() - freed_at
        assert wait_for(lambda: not sup.outbox.storage_failing, 10)  # type: ignore[union-attr]
        assert sup.outbox.flush(10)
        snap = sup.outbox.snapshot()
        assert "queue_full" not in snap["dropped"], snap["dropped"]  # held, then committed
        accepted_now = accepted(sup)
        assert wait_for(lambda: accepted(sup) > accepted_now, 30)  # new events stored again
        assert install_bundle(installer, update).outcome == "committed"
    finally:
        sup.stop_event.set()
        runner.join(30)
    assert not runner.is_alive()
    assert sup.exit_code == 0
    figure(
        "disk_full",
        mode="tmpfs ENOSPC" if small_fs.real else "free-space seam",
        alarm_after_s=round(alarm_after_s, 2),
        events_while_full=events_while_full,
        cleared_after_s=round(cleared_after_s, 2),
        update_refused=Reason.INSUFFICIENT_SPACE.value,
    )

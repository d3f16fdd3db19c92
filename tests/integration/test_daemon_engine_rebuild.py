"""The daemon after a JetPack upgrade: starts at once, reports the rebuild, then serves.

Real broker, real supervisor, real installed bundle and files; TensorRT and pycuda are
the fakes, with a build held open to look at the daemon while it builds.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agent.assets import find_asset
from agent.config import load_config
from agent.daemon.control import request
from agent.daemon.supervisor import Supervisor
from tests.support.mosquitto import MosquittoBroker
from tests.support.trt_stacks import JETPACK5, JETPACK6, ONNX, Slot, installed_under, use_stack
from tests.support.update_fleet import Fleet
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker


def test_daemon_reports_the_rebuild_then_serves_the_rebuilt_engine(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    write_config: Any,
    clean_env: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    onnx = find_asset(ONNX)
    assert onnx is not None
    fleet = Fleet(tmp_path / "fleet", onnx)
    state = tmp_path / "state"
    installed_under(JETPACK5, state, fleet, monkeypatch)
    hold = threading.Event()
    trt = use_stack(monkeypatch, JETPACK6, hold=hold)  # the JetPack upgrade
    path = write_config(
        f"""
        [device]
        id = "cam-001"
        [mqtt]
        url = "{mosquitto.url}"
        reconnect_min_s = 0.2
        [storage]
        state_dir = "{state}"
        [trust]
        root = "{fleet.root_path}"
        [control]
        socket_path = "{tmp_path / "run" / "control.sock"}"
        [telemetry]
        health_interval_s = 0.2
        [[models]]
        slot = "detector"
        path = "{onnx}"
        backend = "tensorrt"
        decoder = "classify"
        input_size = [192, 48]
        """
    )
    slot = Slot(state)
    sup = Supervisor(load_config(path, environ={}), pipeline_factory=lambda *_: slot)
    socket = Path(sup.config.control.socket_path)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(sup.run()), name="test-daemon")
    runner.start()
    try:

        def model_health() -> dict[str, str]:
            if not socket.exists():
                return {}
            health: dict[str, str] = request(socket, {"op": "status"})["health"]["components"][
                "model:detector"
            ]
            return health

        # Up while the build runs (a Jetson build outlasts systemd's start timeout).
        assert wait_for(lambda: model_health().get("status") == "degraded", 20.0)
        detail = model_health()["detail"]
        assert "rebuilding the TensorRT engine" in detail
        assert "TensorRT 8.5.2.2 on Xavier (fake) (sm72)" in detail
        assert slot.loaded is None
        hold.set()
        assert wait_for(lambda: model_health().get("status") == "ok", 20.0)
        assert slot.loaded is not None
        assert slot.loaded.path.parent == state / "engines"
        assert len(trt.builds) == 1
    finally:
        hold.set()
        sup.stop_event.set()
        runner.join(20)
    assert result == [0]

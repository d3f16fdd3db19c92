"""The technician's live view on a real ``edge-agent run`` (sample clip, sample model, real
broker), loaded in a real headless Chromium: a frame with the detections' boxes drawn, and
the status and update documents."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from agent.daemon.liveview import basic_auth_ok, fresh, loopback_host
from agent.events.types import DetectionEvent
from tests.support import daemon_proc
from tests.support.browser import chromium_or_skip
from tests.support.mosquitto import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker


def _get(url: str, host: str = "") -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url)
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status), reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_live_view_shows_a_frame_with_boxes_and_the_status(
    mosquitto, tmp_path: Path, sample_clip: Path, short_range_model: Path
):
    cv2 = pytest.importorskip("cv2")
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[device]
id = "cam-001"
[mqtt]
url = "{mosquitto.url}"
[storage]
state_dir = "{tmp_path / "state"}"
[trust]
root = "{tmp_path / "no-root.json"}"
[control]
socket_path = "{tmp_path / "ctl.sock"}"
[web]
enabled = true
listen = "127.0.0.1:{port}"
frame_interval_s = 0.3
{daemon_proc.door_camera(sample_clip, short_range_model)}
""",
        encoding="utf-8",
    )
    proc = daemon_proc.spawn(config, tmp_path / "daemon.log")
    url = f"http://127.0.0.1:{port}"
    try:
        daemon_proc.wait_running(tmp_path / "ctl.sock", proc)

        def boxed() -> tuple[int, bytes, dict[str, str]] | None:
            found = _get(url + "/frame.jpg?camera=door")
            return found if found[0] == 200 and int(found[2]["X-Detections"]) > 0 else None

        assert wait_for(boxed, 30, 0.2), "no frame with detections"
        _code, jpeg, _headers = boxed() or (0, b"", {})
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        b, g, r = (image[..., i].astype(int) for i in range(3))
        assert int(((g > 200) & (r < 90) & (b < 90)).sum()) > 100, "no green box drawn"
        assert image.shape[1] <= 960
        # The same documents as `edge-agent status` and `update status`.
        status = json.loads(_get(url + "/api/status")[1])
        assert status["daemon"]["pid"] == proc.pid
        assert "slots" in json.loads(_get(url + "/api/update")[1])
        report = json.loads(_get(url + "/api/diag")[1])  # the diag report, live daemon state
        assert {"config", "camera:door", "model:detector"} <= {c["name"] for c in report["checks"]}
        assert _get(url + "/frame.jpg?camera=nope")[0] == 404
        # Bound to loopback: another Host (DNS rebinding) is refused.
        assert _get(url + "/api/status", host="evil.example")[0] == 400

        browser = chromium_or_skip(tmp_path / "chromium-profile")
        try:
            browser.get(url + "/")
            shown = lambda: browser.execute_script(  # noqa: E731
                "const i = document.getElementById('frame');"
                "return i.complete && i.naturalWidth > 0 &&"
                " /[1-9]\\d* detection/.test(document.getElementById('detections').innerText)"
                " && document.getElementById('status').innerText.includes('daemon')"
            )
            assert wait_for(shown, 20, 0.2), browser.page_source[:3000]
            browser.save_screenshot(str(tmp_path / "live-view.png"))
        finally:
            browser.quit()
    finally:
        assert daemon_proc.stop(proc) == 0


def test_basic_auth_and_host_checks():
    digest = hashlib.sha256(b"technician:s3cret-pass").digest()
    good = "Basic " + base64.b64encode(b"technician:s3cret-pass").decode()
    assert basic_auth_ok(good, digest)
    assert not basic_auth_ok("Basic " + base64.b64encode(b"technician:nope").decode(), digest)
    assert not basic_auth_ok("Bearer x", digest)
    assert not basic_auth_ok("Basic !!!", digest)
    assert not basic_auth_ok(None, digest)
    assert loopback_host("127.0.0.1:8781")
    assert loopback_host("localhost")
    assert loopback_host("[::1]:8781")
    assert not loopback_host("evil.example:8781")
    assert not loopback_host(None)


def test_web_config_off_by_default_and_exposed_only_with_a_password():
    from pydantic import ValidationError

    from agent.config.root import AgentConfig

    assert AgentConfig().web.enabled is False
    with pytest.raises(ValidationError, match=r"web\.password"):
        AgentConfig.model_validate({"web": {"enabled": True, "listen": "0.0.0.0:8781"}})
    exposed = {"enabled": True, "listen": "0.0.0.0:8781", "password": "file:/etc/pw"}
    assert AgentConfig.model_validate({"web": exposed}).web.listen == "0.0.0.0:8781"
    with pytest.raises(ValidationError, match="HOST:PORT"):
        AgentConfig.model_validate({"web": {"listen": "8781"}})


def test_boxes_of_an_old_event_are_not_drawn_on_a_newer_frame():
    event = DetectionEvent(seq=1, ts=100.0, camera="door", model="detector", detections=())
    assert fresh(event, 101.0) is event
    assert fresh(event, 103.0) is None
    assert fresh(None, 100.0) is None

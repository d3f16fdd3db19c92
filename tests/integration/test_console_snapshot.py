"""The console's device page shows the device's published snapshot, detections drawn: a real
``edge-agent run`` on the sample clip and model publishes ``<base>/snapshot/<camera>`` through
a real Mosquitto, a real ``edge-fleet console`` serves it; a short look in headless Chromium."""

from __future__ import annotations

import http.cookiejar
import re
import textwrap
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.integration.test_console import PASSWORD, _start_console
from tests.support import daemon_proc
from tests.support.browser import chromium_or_skip
from tests.support.waiting import wait_for

pytest.importorskip("starlette", reason="needs the console extra (starlette, uvicorn, jinja2)")
pytestmark = pytest.mark.broker


def _config(tmp_path: Path, broker_url: str, clip: Path, model: Path) -> Path:
    path = tmp_path / "agent.toml"
    text = f"""
        [device]
        id = "cam-001"
        [mqtt]
        url = "{broker_url}"
        reconnect_min_s = 0.2
        reconnect_max_s = 1.0
        [storage]
        state_dir = "{tmp_path / "state"}"
        [trust]
        root = "{tmp_path / "no-root.json"}"
        [control]
        socket_path = "{tmp_path / "ctl.sock"}"
        [telemetry]
        stats_interval_s = 0.5
        snapshot_interval_s = 0.3
        snapshot_max_width_px = 320
        [outbox]
        batch_interval_s = 0.05
        {daemon_proc.door_camera(clip, model)}
        """
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def _green(image: np.ndarray) -> int:
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return int(((g > 180) & (b < 110) & (r < 110)).sum())


def test_device_page_serves_the_published_snapshot_with_boxes(
    mosquitto, tmp_path: Path, sample_clip: Path, short_range_model: Path
):
    config = _config(tmp_path, mosquitto.url, sample_clip, short_range_model)
    daemon = daemon_proc.spawn(config, tmp_path / "daemon.log")
    console = None
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    try:
        daemon_proc.wait_running(tmp_path / "ctl.sock", daemon)
        console, url = _start_console(tmp_path, mosquitto.url, bundles)
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"password": PASSWORD}).encode()
        opener.open(url + "/login", data=form, timeout=5).close()

        def image_src() -> str:
            with opener.open(url + "/fragment/device/cam-001", timeout=5) as reply:
                html = reply.read().decode()
            found = re.search(r'id="published-snapshot"[^>]* src="([^"]+)"', html)
            return found.group(1) if found else ""

        assert wait_for(image_src, 20, 0.2), "the device page shows no published snapshot"
        assert image_src().startswith("/device/cam-001/snapshot.jpg?v=")
        boxed: list[np.ndarray] = []

        def fetch_boxed() -> bool:
            with opener.open(url + image_src(), timeout=5) as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"] == "image/jpeg"
                assert reply.headers["X-Camera"] == "door"
                image = _decode(reply.read())
            assert image.shape == (240, 320, 3)  # the 640x480 clip at snapshot_max_width_px
            if _green(image) > 200:  # the sample model's faces, boxed by the device
                boxed.append(image)
            return bool(boxed)

        assert wait_for(fetch_boxed, 15, 0.3), "no snapshot with detection boxes served"
        cv2.imwrite(str(tmp_path / "published-snapshot.jpg"), boxed[0])
        # Without a session the image is not served: the login page instead.
        with urllib.request.urlopen(url + "/device/cam-001/snapshot.jpg", timeout=5) as reply:
            assert reply.url.endswith("/login")
            assert reply.headers["Content-Type"].startswith("text/html")

        # The browser shows it (a short look: the console test drives the rest).
        browser = chromium_or_skip(tmp_path / "chromium-profile")
        from selenium.webdriver.common.by import By

        try:
            browser.set_page_load_timeout(15)
            browser.get(url + "/login")
            browser.find_element(By.ID, "password").send_keys(PASSWORD)
            browser.find_element(By.ID, "login").click()
            # The login's redirect must land before the next page asks with its cookie.
            assert wait_for(lambda: not browser.current_url.endswith("/login"), 15, 0.1)
            browser.get(url + "/device/cam-001")

            def shown() -> bool:
                width = browser.execute_script(
                    "const i = document.getElementById('published-snapshot');"
                    "return i && i.complete ? i.naturalWidth : 0"
                )
                return width == 320

            assert wait_for(shown, 15, 0.2), browser.page_source[:3000]
            browser.save_screenshot(str(tmp_path / "console-snapshot.png"))
        finally:
            browser.quit()
    finally:
        if console is not None:
            console.terminate()
            console.wait(10)
        assert daemon_proc.stop(daemon) == 0

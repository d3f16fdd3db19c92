"""edge-fleet console in a real headless Chromium, against a real Mosquitto with a real
``edge-agent run`` daemon (stats for the charts, commands) and three in-process devices
running the real update service (a canary rollout, one failing its trial).

Screenshots land in the test's temp dir (``console-*.png``).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.fleet.keys import init_keys
from agent.update.store.probe import OfflineProbe
from tests.integration.test_delivery import make_bundle, start_device
from tests.integration.test_fleet import BrokenRuntimeProbe
from tests.support import daemon_proc
from tests.support.browser import chromium_or_skip
from tests.support.mosquitto import free_port
from tests.support.waiting import wait_for

pytest.importorskip("starlette", reason="needs the console extra (starlette, uvicorn, jinja2)")
pytestmark = pytest.mark.broker

PASSWORD = "correct horse battery"


def _start_console(
    tmp_path: Path, broker_url: str, bundles: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    secret = tmp_path / "console.pw"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    command = [
        sys.executable, "-m", "agent.fleet", "console", "--broker", broker_url,
        "--listen", f"127.0.0.1:{port}", "--login-password", f"file:{secret}",
        "--bundles", str(bundles), "--answer-timeout", "15",
    ]  # fmt: skip
    log = (tmp_path / "console.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=daemon_proc.REPO)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(url + "/login", timeout=1).close()
        except OSError:
            return proc.poll() is not None
        return True

    assert wait_for(up, 20, 0.1), "console did not come up"
    assert proc.poll() is None, (tmp_path / "console.log").read_text()
    return proc, url


@pytest.fixture
def fleet(mosquitto, tmp_path, short_range_model):
    keys = tmp_path / "keys"
    init_keys(keys)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    make_bundle(keys, bundles / "1-canary", short_range_model, 1, devices=["cam-a"])
    make_bundle(keys, bundles / "2-rest", short_range_model, 2, devices=["cam-b", "cam-c"])
    config = daemon_proc.minimal_config(
        tmp_path / "agent.toml",
        broker_url=mosquitto.url,
        state_dir=tmp_path / "daemon",
        socket_path=tmp_path / "ctl.sock",
        device='profile = "x86-gateway"',
        telemetry="stats_interval_s = 0.25",
    )
    daemon = daemon_proc.spawn(config, tmp_path / "daemon.log")
    devices = []
    console = None
    try:
        for name in ("cam-a", "cam-b", "cam-c"):
            probe = BrokenRuntimeProbe() if name == "cam-b" else OfflineProbe()
            devices.append(
                start_device(mosquitto, keys, tmp_path / name, device_id=name, probe=probe)
            )
        daemon_proc.wait_running(tmp_path / "ctl.sock", daemon)
        console, url = _start_console(tmp_path, mosquitto.url, bundles)
        yield url
    finally:
        if console is not None:
            console.terminate()
            console.wait(10)
        for device in devices:
            device.close()
        daemon_proc.stop(daemon)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: object, **_kw: object) -> None:
        return None


def _post(url: str, data: bytes, host: str = "") -> tuple[int, str]:
    """Status and Location of a POST made without the browser (no session, no CSRF token)."""
    request = urllib.request.Request(url, data=data, method="POST")
    if host:
        request.add_header("Host", host)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=5) as reply:
            return int(reply.status), ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", "")


def test_console_canary_rollout_watched_end_to_end_in_chromium(fleet, tmp_path):
    url = fleet
    # Without a session nothing is done; a foreign Host header (DNS rebinding) is refused.
    assert _post(url + "/confirm", b"action=command&device=cam-001&op=ping") == (303, "/login")
    assert _post(url + "/do", b"token=x", host="evil.example")[0] == 400
    browser = chromium_or_skip(tmp_path / "chromium-profile")
    from selenium.webdriver.common.by import By

    def shot(name: str) -> None:
        browser.save_screenshot(str(tmp_path / f"console-{name}.png"))

    def js(script: str, *args: object) -> object:
        return browser.execute_script(script, *args)

    def text(css: str) -> str:
        # One read inside the page: htmx swaps fragments under us every second or two.
        return str(
            js(
                "return Array.from(document.querySelectorAll(arguments[0]))"
                ".map(e => e.innerText).join(' ')",
                css,
            )
        )

    def data(css: str, *keys: str) -> list[list[str]]:
        found = js(
            "return Array.from(document.querySelectorAll(arguments[0]))"
            ".map(e => arguments[1].map(k => e.dataset[k]))",
            css,
            list(keys),
        )
        assert isinstance(found, list)
        return found

    def until(predicate, timeout_s: float = 15.0, what: str = "") -> None:
        if not wait_for(predicate, timeout_s, 0.1):
            shot("failure")
            raise AssertionError(f"not reached: {what}\n{browser.page_source[:4000]}")

    def click(element_id: str) -> None:
        browser.find_element(By.ID, element_id).click()

    try:
        browser.set_page_load_timeout(15)
        browser.get(url + "/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "password").send_keys("wrong password")
        click("login")
        until(lambda: text("#login-error"), what="login refused")
        assert "wrong password" in text("#login-error")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        click("login")

        # The fleet table: every device, online, with the daemon's board profile.
        until(lambda: len(data("#fleet-table tr[data-device]", "device")) == 4, what="4 rows")
        assert {d for (d,) in data("#fleet-table tr[data-device]", "device")} == {
            "cam-001",
            "cam-a",
            "cam-b",
            "cam-c",
        }
        for device in ("cam-001", "cam-a", "cam-b", "cam-c"):
            assert "online" in text(f'tr[data-device="{device}"]')
        until(lambda: "x86-gateway" in text('tr[data-device="cam-001"]'), what="profile")

        def order() -> list[str]:
            return [d for (d,) in data("#fleet-table tr[data-device]", "device")]

        # Sortable (a header click sorts by it, again the other way) and filterable.
        browser.find_element(By.CSS_SELECTOR, 'a.sort[data-sort="device"]').click()
        until(lambda: order() == ["cam-c", "cam-b", "cam-a", "cam-001"], what="sorted desc")
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element(By.NAME, "status")).select_by_value("offline")
        until(lambda: order() == [], what="no device offline")
        Select(browser.find_element(By.NAME, "status")).select_by_value("all")
        until(lambda: len(order()) == 4, what="all again")

        # A staged rollout of two pre-signed bundles, behind a confirmation.
        browser.get(url + "/deployments")
        click("bundle-1-canary")
        click("bundle-2-rest")
        click("rollout")
        until(lambda: text("#summary"), what="confirmation page")
        summary = text("#summary")
        assert "stage 1: 1-canary" in summary
        assert "devices cam-a" in summary
        assert "stage 2: 2-rest" in summary
        assert "manifest v2" in summary
        click("confirm")
        until(lambda: data("section.rollout", "status"), what="rollout shown")
        js("window.__same_page = true")
        seen: list[str] = []

        def progress() -> bool:
            [(status,)] = data("section.rollout", "status")
            line = f"{status}: {text('section.rollout .stage-status')}"
            if not seen or seen[-1] != line:
                seen.append(line)
            return status != "running"

        until(progress, 40, "rollout finished")
        shot("deployments")
        # It moved live on one page (htmx swaps, no reload) from running to halted.
        assert js("return window.__same_page === true")
        print("rollout as the page showed it:", seen)
        assert seen[0].startswith("running"), seen
        assert seen[-1].startswith("halted"), seen
        why = text(".halt-reason")
        assert "halt rule fired at stage rest" in why
        assert "cam-b: health_failed" in why
        assert "delegate failed" in why
        assert "fired" in text("section.rollout p.small")
        states = {
            d: (st, pc)
            for d, st, pc in data("table.progress tr", "device", "status", "percent")
            if d
        }
        assert states["cam-a"] == ("successful", "100.0")
        assert states["cam-c"] == ("successful", "100.0")
        assert states["cam-b"][0] == "failed"

        # The fleet table shows each device's active manifest version and release.
        browser.get(url + "/")

        def models(device: str) -> str:
            return text(f'tr[data-device="{device}"] td.models')

        until(lambda: "v1 (release 1)" in models("cam-a"), what="cam-a on v1")
        assert "v2 (release 2)" in models("cam-c")
        assert "release" not in models("cam-b")  # rolled back: still on what it shipped with
        assert "health_failed" in text('tr[data-device="cam-b"]')
        shot("fleet")

        # Per-device charts drawn from live stats, and a ping behind a confirmation.
        browser.get(url + "/device/cam-001")

        def drawn(chart: str) -> bool:
            return bool(
                js(
                    "const f = document.getElementById(arguments[0]);"
                    "return Number(f.dataset.points || 0) >= 3 && !!f.querySelector('canvas')",
                    chart,
                )
            )

        until(lambda: drawn("chart-cpu"), 20, "cpu chart with points")
        assert drawn("chart-rss")
        assert drawn("chart-outbox")
        click("cmd-ping")
        until(lambda: text("#summary"), what="confirmation page")
        assert "send ping to cam-001" in text("#summary")
        click("confirm")
        until(lambda: "successful" in text('#ops tr[data-op^="ping/"]'), what="ping answered")
        shot("device")
    finally:
        browser.quit()

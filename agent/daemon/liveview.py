"""The technician's live view (``[web] enabled = true``; issue 20 item 2).

A small page served by the daemon itself with the standard library's HTTP server (no web
framework on the device): the newest frame of a camera with the latest detections drawn,
refreshed every ``frame_interval_s``, and the same documents as ``edge-agent status``,
``update status`` and ``diag``. Read-only: nothing on it changes the device.

Bound to loopback by default (a technician on the device, or over an SSH tunnel), and then
only loopback ``Host`` names are answered (no DNS rebinding from a web page). Anywhere else
needs ``web.password`` (HTTP basic auth, user ``technician``; compared as SHA-256 digests
in constant time) and belongs behind TLS (docs/liveview.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt

from agent.config.base import resolve_secret
from agent.config.web import is_loopback, split_listen
from agent.daemon.ops import FrameSource, run_diag
from agent.events.types import DetectionEvent, EventSink
from agent.log import get_logger
from agent.update.store.journal import read_status
from agent.uplink.snapshots import LatestEvents, draw_boxes, fresh

if TYPE_CHECKING:
    from agent.daemon.supervisor import Supervisor

log = get_logger(__name__)
USER = "technician"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def draw(frame: npt.NDArray[np.uint8], event: DetectionEvent | None, max_width: int) -> Any:
    """The frame with the event's boxes and labels drawn, scaled to ``max_width``."""
    import cv2  # noqa: PLC0415 - OpenCV comes with the inference extras, not the base install

    image = draw_boxes(frame, event)
    height, width = image.shape[:2]
    if width > max_width:
        image = cv2.resize(image, (max_width, int(height * max_width / width)))
    return image


def basic_auth_ok(header: str | None, digest: bytes) -> bool:
    """An ``Authorization: Basic`` header whose ``user:password`` hashes to ``digest``."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.sha256(given).digest(), digest)


def loopback_host(host: str | None) -> bool:
    """A ``Host`` header naming this machine's loopback (with or without a port)."""
    host = host or ""
    name = "[::1]" if host.startswith("[::1]") else host.rsplit(":", 1)[0]
    return name in LOOPBACK_NAMES


class LiveView:
    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self._cfg = sup.config.web
        self._events = LatestEvents()
        secret = resolve_secret(self._cfg.password, "web.password")
        self._digest = hashlib.sha256(f"{USER}:{secret}".encode()).digest() if secret else None
        host, port = split_listen(self._cfg.listen)
        self._loopback = is_loopback(host)
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="live-view")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def tap(self, sink: EventSink) -> EventSink:
        """``sink`` that also keeps each camera's latest event for the boxes."""
        return self._events.tap(sink)

    def start(self) -> None:
        self._thread.start()
        log.info("live_view_started", listen=self._cfg.listen, auth=self._digest is not None)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    # What the page shows.

    def cameras(self) -> list[str]:
        return [c.name for c in self._sup.config.cameras]

    def frame_jpeg(self, camera: str) -> tuple[bytes, int] | None:
        pipeline: object = self._sup.pipeline
        frame = pipeline.latest_frame(camera) if isinstance(pipeline, FrameSource) else None
        if frame is None:
            return None
        import cv2  # noqa: PLC0415

        event = self._events.get(camera)
        image = draw(frame, fresh(event, self._sup.clock.wall_s()), self._cfg.max_width)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._cfg.quality])
        return (data.tobytes(), len(event.detections) if event else 0) if ok else None

    def documents(self, name: str) -> dict[str, Any] | None:
        sup = self._sup
        makers: dict[str, Callable[[], dict[str, Any]]] = {
            "status": sup.status,
            "update": lambda: read_status(sup.state_dir, Path(sup.config.trust.root)),
            "diag": lambda: run_diag(sup, []),
        }
        maker = makers.get(name)
        return None if maker is None else maker()

    def authorised(self, header: str | None) -> bool:
        return self._digest is None or basic_auth_ok(header, self._digest)

    def host_ok(self, host: str | None) -> bool:
        return not self._loopback or loopback_host(host)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        view = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edge-agent-live-view"

            def log_message(self, *_args: Any) -> None:
                return  # requests are not worth a log line each

            def _send(self, code: int, body: bytes, ctype: str, **headers: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header(
                    "Content-Security-Policy",
                    "default-src 'self'; img-src 'self' blob:; style-src 'self' 'unsafe-inline'",
                )
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if not view.host_ok(self.headers.get("Host")):
                    self._send(400, b"unexpected Host header\n", "text/plain")
                    return
                if not view.authorised(self.headers.get("Authorization")):
                    self._send(
                        401, b"login required\n", "text/plain",
                        WWW_Authenticate='Basic realm="edge-agent", charset="UTF-8"',
                    )  # fmt: skip
                    return
                try:
                    self._route()
                except Exception as exc:  # one bad request must not take the server down
                    log.exception("live_view_request_failed", path=self.path)
                    self._send(500, f"error: {exc}\n".encode(), "text/plain")

            def _route(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path == "/":
                    self._send(200, page(view).encode(), "text/html; charset=utf-8")
                elif url.path == "/page.js":
                    self._send(200, SCRIPT.encode(), "text/javascript; charset=utf-8")
                elif url.path == "/frame.jpg":
                    camera = (query.get("camera") or [""])[0]
                    found = view.frame_jpeg(camera) if camera in view.cameras() else None
                    if found is None:
                        self._send(404, b"no frame yet\n", "text/plain")
                    else:
                        self._send(200, found[0], "image/jpeg", X_Detections=str(found[1]))
                elif url.path.startswith("/api/"):
                    doc = view.documents(url.path.removeprefix("/api/"))
                    if doc is None:
                        self._send(404, b"unknown document\n", "text/plain")
                    else:
                        body = json.dumps(doc, indent=1, default=str).encode()
                        self._send(200, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

        return Handler


def page(view: LiveView) -> str:
    cameras = view.cameras()
    options = "".join(f"<option>{_html(c)}</option>" for c in cameras)
    interval_ms = int(view._cfg.frame_interval_s * 1000)  # noqa: SLF001 - same module
    device = _html(view._sup.config.device.id)  # noqa: SLF001
    return (
        PAGE.replace("{{device}}", device)
        .replace("{{options}}", options)
        .replace("{{interval_ms}}", str(interval_ms))
    )


def _html(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def start_live_view(sup: Supervisor, sink: EventSink) -> tuple[LiveView, EventSink]:
    """The daemon's hook: start the server, tap the event sink for the boxes."""
    view = LiveView(sup)
    view.start()
    return view, view.tap(sink)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{device}}: live view</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #1d232a; }
img { max-width: 100%; border: 1px solid #ccc; background: #eee; min-height: 120px; }
pre { background: #f6f7f9; padding: .5em; max-height: 30em; overflow: auto; }
.cols { display: flex; gap: 1.5em; flex-wrap: wrap; } .cols > div { flex: 1 1 28em; }
</style></head>
<body data-interval="{{interval_ms}}">
<h1>{{device}}</h1>
<p><label>Camera <select id="camera">{{options}}</select></label>
<span id="detections"></span></p>
<img id="frame" alt="newest frame">
<div class="cols">
<div><h2>Status</h2><pre id="status">…</pre></div>
<div><h2>Updates</h2><pre id="update">…</pre></div>
</div>
<h2>Diagnostics <button id="run-diag">run</button></h2><pre id="diag">not run yet</pre>
<script src="/page.js"></script>
</body></html>
"""

SCRIPT = """
// Live view: a new frame every interval, status and update state every 2 s, diag on demand.
(function () {
  var camera = document.getElementById("camera");
  var img = document.getElementById("frame");
  var interval = Number(document.body.dataset.interval || 1000);
  function frame() {
    fetch("/frame.jpg?camera=" + encodeURIComponent(camera.value) + "&t=" + Date.now())
      .then(function (r) {
        if (!r.ok) { throw new Error("no frame yet"); }
        document.getElementById("detections").textContent =
          r.headers.get("X-Detections") + " detection(s) on the latest event";
        return r.blob();
      })
      .then(function (blob) {
        var old = img.src;
        img.src = URL.createObjectURL(blob);
        if (old && old.startsWith("blob:")) { URL.revokeObjectURL(old); }
      })
      .catch(function () {});
  }
  function doc(name, target) {
    fetch("/api/" + name).then(function (r) { return r.text(); })
      .then(function (text) { document.getElementById(target).textContent = text; })
      .catch(function () {});
  }
  document.getElementById("run-diag").addEventListener("click", function () {
    document.getElementById("diag").textContent = "running…";
    doc("diag", "diag");
  });
  frame(); doc("status", "status"); doc("update", "update");
  setInterval(frame, interval);
  setInterval(function () { doc("status", "status"); doc("update", "update"); }, 2000);
})();
"""

"""A real RTSP 1.0 camera on 127.0.0.1 for capture tests: Motion-JPEG over RTP over TCP.

It answers OPTIONS, DESCRIBE (SDP), SETUP (``RTP/AVP/TCP`` interleaved only: a request
for UDP gets 461, so a client that does not force TCP shows up), PLAY, PAUSE, TEARDOWN
and GET/SET_PARAMETER (keep-alive), and ignores the client's interleaved RTCP. Frames are
JPEG-encoded once up front (``tests.support.rtp_jpeg``) and sent in a loop at ``fps``,
each as RFC 2435 packets with in-band quantization tables.

Test controls: ``pause()`` stops RTP but keeps every TCP session open (a stalled camera),
``resume()``, ``drop_clients()`` closes the connections (a camera that went away and
listens again), ``stop()``. Counters (``connections``, ``setups``, ``plays``,
``teardowns``, ``frames_sent``; ``transports`` lists what SETUP asked for) let a test
see what the client did and how often.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from tests.support.rtp_jpeg import CLOCK_HZ, PAYLOAD_TYPE, encode_frame, payloads, rtp_packets

SEND_TIMEOUT_S = 5.0  # a client that stops reading for this long is dropped
PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER"


def clip_frames(path: Path, count: int, step: int = 1) -> list[npt.NDArray[np.uint8]]:
    """``count`` frames of a video, every ``step``-th from the start, decoded by OpenCV."""
    cap = cv2.VideoCapture(str(path))
    frames: list[npt.NDArray[np.uint8]] = []
    try:
        index = 0
        while len(frames) < count:
            ok, image = cap.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(np.asarray(image, np.uint8))
            index += 1
    finally:
        cap.release()
    if len(frames) < count:
        raise ValueError(f"{path} has fewer than {count * step} frames")
    return frames


class _Request:
    def __init__(self, head: str, body: bytes) -> None:
        lines = head.split("\r\n")
        self.method, self.url, _ = [*lines[0].split(" "), "", ""][:3]
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.body = body


def _split(buffer: bytearray) -> Iterator[_Request]:
    """Complete RTSP requests from the front of ``buffer``; interleaved frames are dropped."""
    while buffer:
        if buffer[0] == 0x24:  # '$' channel length: the client's RTCP, not needed here
            if len(buffer) < 4:
                return
            (length,) = struct.unpack_from(">H", buffer, 2)
            if len(buffer) < 4 + length:
                return
            del buffer[: 4 + length]
            continue
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).decode("latin-1")
        request = _Request(head, b"")
        length = int(request.headers.get("content-length", "0"))
        if len(buffer) < end + 4 + length:
            return
        request.body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        yield request


class _Client:
    """One TCP connection: requests in, RTP out, on one thread (no write lock needed)."""

    def __init__(self, server: RtspServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.session = secrets.token_hex(4).upper()
        self.ssrc = secrets.randbits(32)
        self.channel = 0
        self.playing = False
        self.closing = False
        self.seq = secrets.randbits(16)
        self.ts_base = secrets.randbits(32)
        self.started = time.monotonic()
        self.next_due = 0.0
        self.index = 0

    def run(self) -> None:
        buffer = bytearray()
        period = 1.0 / self.server.fps
        try:
            while not self.closing and not self.server.stopping.is_set():
                sending = self.playing and self.server.sending.is_set()
                wait = max(0.0, self.next_due - time.monotonic()) if sending else 0.1
                readable, _, _ = select.select([self.sock], [], [], wait)
                if readable:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                    for request in _split(buffer):
                        self.respond(request)
                if self.playing and self.server.sending.is_set():
                    now = time.monotonic()
                    if now >= self.next_due:
                        self.send_frame(now)
                        # After a pause or a slow send, pace from now rather than burst.
                        self.next_due = max(self.next_due + period, now)
        except OSError:
            return  # dropped by the test, or the client went away
        finally:
            self.server.forget(self)
            with contextlib.suppress(OSError):
                self.sock.close()

    def send_frame(self, now: float) -> None:
        parts = self.server.frame_payloads[self.index % len(self.server.frame_payloads)]
        timestamp = self.ts_base + int((now - self.started) * CLOCK_HZ)
        packets, self.seq = rtp_packets(parts, self.seq, timestamp, self.ssrc)
        blob = b"".join(
            struct.pack(">BBH", 0x24, self.channel, len(packet)) + packet for packet in packets
        )
        self.sock.sendall(blob)
        self.index += 1
        self.server.count("frames_sent")

    def reply(self, request: _Request, status: str, headers: dict[str, str], body: bytes) -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {request.headers.get('cseq', '0')}"]
        lines += ["Server: edge-agent-test-rtsp"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "", ""]
        self.sock.sendall("\r\n".join(lines).encode("latin-1") + body)

    def respond(self, request: _Request) -> None:
        server = self.server
        session = {"Session": f"{self.session};timeout=60"}
        method = request.method
        server.count("requests")
        if method == "OPTIONS":
            self.reply(request, "200 OK", {"Public": PUBLIC}, b"")
        elif method == "DESCRIBE":
            if not request.url.rstrip("/").endswith(f"/{server.path}"):
                self.reply(request, "404 Not Found", {}, b"")
                return
            headers = {"Content-Type": "application/sdp", "Content-Base": f"{server.url}/"}
            self.reply(request, "200 OK", headers, server.sdp().encode())
        elif method == "SETUP":
            transport = request.headers.get("transport", "")
            server.record_transport(transport)
            if "RTP/AVP/TCP" not in transport:
                self.reply(request, "461 Unsupported Transport", {}, b"")
                return
            self.channel = _interleaved_channel(transport)
            reply_transport = (
                f"RTP/AVP/TCP;unicast;interleaved={self.channel}-{self.channel + 1};"
                f"ssrc={self.ssrc:08X}"
            )
            server.count("setups")
            self.reply(request, "200 OK", {**session, "Transport": reply_transport}, b"")
        elif method == "PLAY":
            self.playing = True
            self.next_due = time.monotonic()
            server.count("plays")
            info = f"url={server.url}/track0;seq={self.seq};rtptime={self.ts_base}"
            headers = {**session, "Range": "npt=0.000-", "RTP-Info": info}
            self.reply(request, "200 OK", headers, b"")
        elif method == "PAUSE":
            self.playing = False
            self.reply(request, "200 OK", session, b"")
        elif method in ("GET_PARAMETER", "SET_PARAMETER"):
            self.reply(request, "200 OK", session, b"")
        elif method == "TEARDOWN":
            server.count("teardowns")
            self.reply(request, "200 OK", session, b"")
            self.closing = True
        else:
            self.reply(request, "501 Not Implemented", {}, b"")


def _interleaved_channel(transport: str) -> int:
    for part in transport.split(";"):
        name, _, value = part.partition("=")
        if name.strip() == "interleaved":
            return int(value.split("-")[0])
    return 0


class RtspServer:
    """Serve ``images`` (BGR) in a loop at ``fps`` as ``rtsp://127.0.0.1:PORT/<path>``."""

    def __init__(self, images: list[npt.NDArray[np.uint8]], fps: float, path: str = "cam") -> None:
        if not images:
            raise ValueError("no frames to serve")
        encoded = [encode_frame(image) for image in images]  # once: the server stays cheap
        self.width, self.height = encoded[0].width, encoded[0].height
        self.frame_payloads = [payloads(frame) for frame in encoded]
        self.fps = fps
        self.path = path
        self.stopping = threading.Event()
        self.sending = threading.Event()
        self.sending.set()
        self._lock = threading.Lock()
        self._clients: list[_Client] = []
        self._threads: list[threading.Thread] = []
        self.connections = self.requests = self.setups = self.plays = 0
        self.teardowns = self.frames_sent = 0
        self.transports: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.url = f"rtsp://127.0.0.1:{self.port}/{path}"
        self._acceptor = threading.Thread(target=self._accept, name="rtsp-accept", daemon=True)
        self._acceptor.start()

    def sdp(self) -> str:
        return (
            "v=0\r\n"
            f"o=- {self.port} 1 IN IP4 127.0.0.1\r\n"
            "s=edge-agent test camera\r\n"
            "c=IN IP4 0.0.0.0\r\n"
            "t=0 0\r\n"
            "a=control:*\r\n"
            f"m=video 0 RTP/AVP {PAYLOAD_TYPE}\r\n"
            f"a=rtpmap:{PAYLOAD_TYPE} JPEG/{CLOCK_HZ}\r\n"
            f"a=framerate:{self.fps:g}\r\n"
            f"a=cliprect:0,0,{self.height},{self.width}\r\n"
            "a=control:track0\r\n"
        )

    # --- counters, read by tests --------------------------------------------------------

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def record_transport(self, transport: str) -> None:
        with self._lock:
            self.transports.append(transport)

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    # --- controls -----------------------------------------------------------------------

    def pause(self) -> None:
        """Stop sending RTP; every TCP session stays open (a stalled camera)."""
        self.sending.clear()

    def resume(self) -> None:
        self.sending.set()

    def drop_clients(self) -> None:
        """Close every connection; the listener keeps accepting new ones."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopping.set()
        self._acceptor.join(2)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_clients()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(2)

    # --- internals ----------------------------------------------------------------------

    def forget(self, client: _Client) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(SEND_TIMEOUT_S)
            client = _Client(self, sock)
            thread = threading.Thread(target=client.run, name="rtsp-client", daemon=True)
            with self._lock:
                self._clients.append(client)
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                self.connections += 1
            thread.start()


class SilentListener:
    """An rtsp:// URL whose port accepts TCP connections and never answers a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"rtsp://127.0.0.1:{self._listener.getsockname()[1]}/cam"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="rtsp-silent", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in [*self._held, self._listener]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(sock)  # held open, never read from or written to
            self.connections += 1


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """An rtsp:// URL to a port that is bound but not listening: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"rtsp://127.0.0.1:{sock.getsockname()[1]}/cam"

"""A real HTTPS file server on 127.0.0.1 for update tests: Range support and scripted faults.

The CA and server certificate are generated with ``cryptography`` at test time. The
server speaks HTTP/1.1 with keep-alive, answers ``Range: bytes=a-b`` with 206, and can be
told to drop the connection mid-body, ignore Range (200 with the whole file), answer a
wrong Content-Range, flip a byte at a file offset, or answer a fixed status (404).
It counts the body bytes it wrote per file, so tests can see what was fetched again.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(directory: Path, common: str = "edge-test") -> Pki:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{common} CA"))
        .issuer_name(_name(f"{common} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


@dataclass
class Faults:
    """What the server does wrong; one-shot faults reset themselves once used."""

    status: int | None = None  # answer every GET with this status and no body
    ignore_range: bool = False  # 200 with the whole file, whatever Range says
    wrong_range: bool = False  # 206 whose Content-Range (and body) start one byte later
    drop_at: int | None = None  # one-shot: close the connection when the body reaches this offset
    drop_file: str = ""  # ... of this file only
    corrupt_at: int | None = None  # flip the byte at this file offset
    corrupt_file: str = ""
    corrupt_times: int = 1  # replies to corrupt (-1: every one)


@dataclass
class Stats:
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # path, Range, status
    body_bytes: dict[str, int] = field(default_factory=dict)  # per file name


class HttpsFileServer:
    def __init__(self, root: Path, pki: Pki) -> None:
        self.root = root
        self.faults = Faults()
        self.stats = Stats()
        self.lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.cert, pki.key)
        owner = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The TLS handshake runs on the connection's own thread, not the accept loop.
                try:
                    tls = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                super().finish_request(tls, client_address)

        class Handler(_Handler):
            server_owner = owner

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.name = "test-https-server"

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def start(self) -> HttpsFileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def sent(self, name: str) -> int:
        with self.lock:
            return self.stats.body_bytes.get(name, 0)

    def ranges(self, name: str) -> list[str]:
        with self.lock:
            return [r for p, r, _ in self.stats.requests if p.endswith("/" + name)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: HttpsFileServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        """Quiet: the test reads the counters instead."""

    def _reply(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def do_GET(self) -> None:
        owner = self.server_owner
        faults = owner.faults
        range_header = self.headers.get("Range", "")
        name = self.path.rsplit("/", 1)[-1]
        path = owner.root / name
        with owner.lock:
            status = faults.status
        if status is not None or not name or not path.is_file():
            status = status or 404
            self._record(range_header, status)
            self._reply(status, {"Content-Length": "0"})
            return
        data = path.read_bytes()
        match = _RANGE.match(range_header)
        if match is None or faults.ignore_range:
            start, end, status = 0, len(data) - 1, 200
        else:
            start = int(match.group(1))
            end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
            status = 206
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if status == 206 and faults.wrong_range:
            start = min(start + 1, end)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        headers["Content-Length"] = str(end - start + 1)
        self._record(range_header, status)
        body = bytearray(data[start : end + 1])
        self._corrupt(name, start, body)
        self._reply(status, headers)
        self._send_body(name, start, bytes(body))

    def _record(self, range_header: str, status: int) -> None:
        with self.server_owner.lock:
            self.server_owner.stats.requests.append((self.path, range_header, status))

    def _corrupt(self, name: str, start: int, body: bytearray) -> None:
        faults = self.server_owner.faults
        with self.server_owner.lock:
            at = faults.corrupt_at
            if at is None or faults.corrupt_file != name or not start <= at < start + len(body):
                return
            if faults.corrupt_times == 0:
                return
            faults.corrupt_times -= 1 if faults.corrupt_times > 0 else 0
        body[at - start] ^= 0xFF

    def _send_body(self, name: str, start: int, body: bytes) -> None:
        owner = self.server_owner
        with owner.lock:
            drop = owner.faults.drop_at if owner.faults.drop_file == name else None
            if drop is not None and start <= drop < start + len(body):
                owner.faults.drop_at = None  # one-shot
            else:
                drop = None
        cut = len(body) if drop is None else drop - start
        try:
            self.wfile.write(body[:cut])
            self.wfile.flush()
        except OSError:
            cut = 0
        with owner.lock:
            owner.stats.body_bytes[name] = owner.stats.body_bytes.get(name, 0) + cut
        if drop is not None:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

"""A minimal HTTPS GET client for bundle files: TLS always verified, ranges, bounded reads.

Wraps ``http.client`` and ``ssl`` (the standard library, no new dependency) and
translates their exceptions once, into ``SourceError``: ``transient`` for what may
work on a later try (refused or reset connections, timeouts, a body cut short,
HTTP 408/429/5xx) and not transient for what will not (certificate verification,
any other HTTP status, redirects, a body of another length than the signed one).

Redirects are never followed: the signed URL is the one fetched. One keep-alive
connection is reused between requests to the same host.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from agent import __version__
from agent.errors import Reason, SourceError
from agent.log import get_logger

log = get_logger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class HttpsSettings:
    ca_file: str = ""  # replaces the system store when set
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    allowed_hosts: tuple[str, ...] = ()  # empty: any host
    max_range_bytes: int = 8 * 1024 * 1024
    retry_base_s: float = 1.0
    retry_cap_s: float = 30.0
    # A chunk that fails its hash this often from the source ends the transfer.
    max_chunk_rejects: int = 3


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Verification on, hostname checked, TLS 1.2+; ``ca_file`` replaces the system store."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise SourceError(
            Reason.DOWNLOAD_FAILED, f"HTTPS CA file unusable: {exc}", transient=False
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True, slots=True)
class Reply:
    """What a GET returned: ``start`` is the file offset of the first body byte."""

    status: int
    start: int
    length: int  # body bytes the reply announces


def _transient(message: str, **data: object) -> SourceError:
    return SourceError(Reason.DOWNLOAD_FAILED, message, transient=True, **data)


def _permanent(reason: Reason, message: str, **data: object) -> SourceError:
    return SourceError(reason, message, transient=False, **data)


def check_host(url: str, allowed: tuple[str, ...]) -> None:
    host = (urlsplit(url).hostname or "").lower()
    if allowed and host not in allowed:
        raise _permanent(Reason.DOWNLOAD_FAILED, f"host {host!r} is not allowed", host=host)


def parse_reply(
    status: int, headers: http.client.HTTPMessage, file_length: int, start: int, end: int
) -> Reply:
    """Decide what a response to ``Range: bytes=start-end`` carries (pure).

    200: the whole file from offset 0 (a server that ignores Range). 206: exactly the
    range asked for; another range means the server's range support cannot be trusted
    (ValueError: the caller drops the reply and asks for whole files from then on).
    """
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _permanent(Reason.DOWNLOAD_FAILED, f"content encoding {encoding!r} not asked for")
    declared = headers.get("Content-Length")
    announced = int(declared) if declared is not None and declared.isdigit() else None
    if status == 200:
        if announced is not None and announced != file_length:
            raise _permanent(
                Reason.LENGTH_MISMATCH, f"server has {announced} bytes, manifest {file_length}"
            )
        return Reply(200, 0, file_length)
    match = _CONTENT_RANGE.match(headers.get("Content-Range", "").strip())
    if match is None:
        raise ValueError("206 without a byte Content-Range")
    first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
    if total != "*" and int(total) != file_length:
        raise _permanent(
            Reason.LENGTH_MISMATCH, f"server has {total} bytes, manifest {file_length}"
        )
    if (first, last) != (start, end) or (announced is not None and announced != end - start + 1):
        raise ValueError(f"asked for bytes {start}-{end}, got {first}-{last}")
    return Reply(206, start, end - start + 1)


class HttpsClient:
    """One GET at a time; ``read`` pulls body bytes of the reply ``get`` returned."""

    def __init__(self, settings: HttpsSettings) -> None:
        self.settings = settings
        self._context = tls_context(settings.ca_file)
        self._conn: http.client.HTTPSConnection | None = None
        self._origin: tuple[str, int] | None = None
        self._response: http.client.HTTPResponse | None = None
        self.requests = 0

    def _connection(self, host: str, port: int) -> http.client.HTTPSConnection:
        if self._conn is not None and self._origin == (host, port):
            return self._conn
        self.close()
        conn = http.client.HTTPSConnection(
            host, port, timeout=self.settings.connect_timeout_s, context=self._context
        )
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise _permanent(
                Reason.DOWNLOAD_FAILED, f"TLS verification of {host} failed: {exc.verify_message}"
            ) from exc
        except ssl.SSLError as exc:
            conn.close()
            if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
                raise _transient(f"TLS handshake with {host} cut short") from exc
            raise _permanent(Reason.DOWNLOAD_FAILED, f"TLS with {host} failed: {exc}") from exc
        except OSError as exc:  # refused, unreachable, DNS, timeout: may work later
            conn.close()
            raise _transient(f"cannot connect to {host}:{port}: {exc}") from exc
        if conn.sock is not None:
            conn.sock.settimeout(self.settings.read_timeout_s)
        self._conn, self._origin = conn, (host, port)
        return conn

    def get(self, url: str, file_length: int, start: int, end: int) -> Reply:
        """GET ``url`` asking for bytes ``start..end`` (inclusive) of a file of ``file_length``."""
        self.release()
        parts = urlsplit(url)
        host = parts.hostname or ""
        conn = self._connection(host, parts.port or 443)
        headers = {
            "Accept-Encoding": "identity",
            "User-Agent": f"edge-agent/{__version__}",
        }
        if start > 0 or end < file_length - 1:
            headers["Range"] = f"bytes={start}-{end}"
        self.requests += 1
        try:
            conn.request("GET", parts.path, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _transient(f"GET {url} failed: {exc}") from exc
        self._response = response
        status = response.status
        if status not in (200, 206):
            self.close()
            if status in _TRANSIENT_STATUS:
                raise _transient(f"GET {url}: HTTP {status}", http_status=status)
            raise _permanent(
                Reason.DOWNLOAD_FAILED, f"GET {url}: HTTP {status}", http_status=status
            )
        try:
            return parse_reply(status, response.msg, file_length, start, end)
        except (SourceError, ValueError):
            self.close()
            raise

    def read(self, size: int) -> bytes:
        """Exactly ``size`` body bytes; transient SourceError when the body ends early."""
        response = self._response
        if response is None:
            raise _transient("no reply to read")
        try:
            data = response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise _transient(f"body read failed: {exc}") from exc
        if len(data) != size:
            self.close()
            raise _transient(f"connection closed after {len(data)} of {size} bytes")
        return data

    def release(self) -> None:
        """Done with the current reply: keep the connection only if the body was read to its end."""
        response, self._response = self._response, None
        if response is not None and not response.isclosed():
            self.close()

    def close(self) -> None:
        self._response = None
        conn, self._conn, self._origin = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()

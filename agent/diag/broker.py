"""``broker`` and ``tls``: TCP reach, MQTT CONNECT/CONNACK, TLS handshake and certificate expiry.

This module talks to paho and ssl directly: it is the translation boundary for
the diagnostics, and every library error becomes a check result here.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MqttConfig, resolve_secret
from agent.config.web import is_loopback
from agent.diag.report import CheckResult, Status, fail, ok, warn, worst
from agent.errors import SecretError

EXPIRY_WARN_DAYS = 30.0
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname or "localhost", parts.port or (8883 if tls else 1883), tls)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def tls_context(cfg: MqttConfig, *, verify: bool = True) -> ssl.SSLContext:
    """Client context: the configured CA (system store when empty) and optional client cert."""
    ctx = ssl.create_default_context(cafile=cfg.ca or None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cfg.cert:
        password = resolve_secret(cfg.key_password, "mqtt.key_password") or None
        ctx.load_cert_chain(cfg.cert, cfg.key or None, password=password)
    return ctx


def tcp_probe(ep: Endpoint, timeout_s: float) -> float:
    """Milliseconds to open a TCP connection; raises OSError."""
    started = time.monotonic()
    with socket.create_connection((ep.host, ep.port), timeout=timeout_s):
        return (time.monotonic() - started) * 1000


def mqtt_connect(cfg: MqttConfig, client_id: str, timeout_s: float) -> str:
    """Full CONNECT/CONNACK with the configured protocol and credentials.

    Returns the CONNACK reason text ("Success" when accepted); raises OSError/ssl errors
    when the connection itself fails and TimeoutError when no CONNACK arrives.
    """
    ep = Endpoint.from_url(cfg.url)
    protocol = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        reconnect_on_failure=False,
    )
    if cfg.username:
        client.username_pw_set(cfg.username, resolve_secret(cfg.password, "mqtt.password"))
    if ep.tls:
        client.tls_set_context(tls_context(cfg))
    answer: list[str] = []

    def on_connect(
        _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any
    ) -> None:  # paho's callback signature
        answer.append("Success" if not reason.is_failure else str(reason))

    client.on_connect = on_connect
    client.connect(ep.host, ep.port, keepalive=max(5, int(timeout_s) + 5))
    try:
        deadline = time.monotonic() + timeout_s
        while not answer and time.monotonic() < deadline:
            rc = client.loop(timeout=0.1)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN) and not answer:
                # The broker closed the link without a CONNACK we could read.
                raise ConnectionError(f"connection lost before CONNACK ({mqtt.error_string(rc)})")
        if not answer:
            raise TimeoutError(f"no CONNACK within {timeout_s:g} s")
        return answer[0]
    finally:
        client.disconnect()
        client.loop(timeout=0.1)


def check_broker(  # noqa: PLR0911 - one return per verdict, worst first
    cfg: MqttConfig, device_id: str, timeout_s: float = CONNECT_TIMEOUT_S
) -> CheckResult:
    ep = Endpoint.from_url(cfg.url)
    data: dict[str, Any] = {
        "url": f"{'mqtts' if ep.tls else 'mqtt'}://{ep}",
        "protocol": cfg.protocol,
    }
    try:
        tcp_ms = tcp_probe(ep, timeout_s)
    except socket.gaierror as exc:
        return fail(
            "broker",
            f"{ep.host}: name does not resolve ({exc.strerror})",
            "check DNS (/etc/resolv.conf) or use an IP address in mqtt.url",
            **data,
        )
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return fail(
            "broker",
            f"TCP {ep}: {reason}",
            "is the broker up? firewall / port open? try `nc -vz HOST PORT`",
            **data,
        )
    data["tcp_ms"] = round(tcp_ms, 1)
    # Our own client id would kick the daemon's session off the broker.
    client_id = f"{device_id}-diag"
    try:
        reason = mqtt_connect(cfg, client_id, timeout_s)
    except SecretError as exc:
        return fail("broker", str(exc), "fix the file: secret's path or permissions", **data)
    except ssl.SSLError as exc:
        return fail("broker", f"TLS to {ep} failed: {exc}", "see the tls check", **data)
    except (OSError, ConnectionError, TimeoutError) as exc:
        return fail(
            "broker",
            f"MQTT to {ep}: {exc}",
            "the port answers but not as an MQTT broker, or it dropped us",
            **data,
        )
    if reason != "Success":
        return fail(
            "broker",
            f"CONNACK from {ep} refused: {reason}",
            "check mqtt.username/password, the broker ACL and mqtt.protocol",
            **data,
        )
    return ok("broker", f"{ep}: TCP {tcp_ms:.0f} ms, MQTT {cfg.protocol} CONNACK accepted", **data)


def check_broker_live(
    cfg: MqttConfig,
    live: dict[str, Any],
    device_id: str = "edge-agent",
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> CheckResult:
    link = live.get("link") if isinstance(live.get("link"), dict) else {}
    data: dict[str, Any] = {"live": True, "link": link}
    url = (link or {}).get("url") or cfg.url
    if (link or {}).get("connected"):
        return ok("broker", f"daemon connected to {url}", **data)
    # The cause, not "see the log": one connection of our own (its own client id, so the
    # daemon's session is not kicked) with the daemon's settings says what the broker says.
    probe = check_broker(cfg, device_id, timeout_s)
    data["probe"] = probe.to_json()
    if probe.status is Status.OK:
        return fail(
            "broker",
            f"daemon not connected to {url}; a new connection from here is accepted "
            "(the daemon is between reconnect attempts)",
            "wait for the next attempt; if it stays, see the daemon log",
            **data,
        )
    return fail("broker", f"daemon not connected to {url}: {probe.detail}", probe.hint, **data)


def days_left(cert: x509.Certificate, now: dt.datetime) -> float:
    return (cert.not_valid_after_utc - now).total_seconds() / 86400


def judge_expiry(what: str, cert: x509.Certificate, now: dt.datetime) -> tuple[Status, str]:
    left = days_left(cert, now)
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    if left < 0:
        return Status.FAIL, f"{what} expired on {until}"
    if left < EXPIRY_WARN_DAYS:
        return Status.WARN, f"{what} expires in {left:.0f} days ({until})"
    return Status.OK, f"{what} valid until {until}"


def server_certificate(ep: Endpoint, ctx: ssl.SSLContext, timeout_s: float) -> tuple[bytes, str]:
    with (
        socket.create_connection((ep.host, ep.port), timeout=timeout_s) as raw,
        ctx.wrap_socket(raw, server_hostname=ep.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        return der or b"", tls.version() or "?"


def check_tls(  # noqa: PLR0911 - one return per verdict, worst first
    cfg: MqttConfig, now: dt.datetime | None = None, timeout_s: float = CONNECT_TIMEOUT_S
) -> CheckResult:
    ep = Endpoint.from_url(cfg.url)
    if not ep.tls and is_loopback(ep.host):
        return ok("tls", f"plaintext MQTT to {ep}, on this host (loopback)", endpoint=str(ep))
    if not ep.tls:
        return warn(
            "tls",
            f"plaintext MQTT to {ep}: credentials and data travel unencrypted",
            "use mqtts:// with mqtt.ca unless the broker is on this host",
            endpoint=str(ep),
        )
    moment = now or dt.datetime.now(dt.timezone.utc)
    verdicts: list[tuple[Status, str]] = []
    data: dict[str, Any] = {"endpoint": str(ep), "ca": cfg.ca, "cert": cfg.cert}
    hint = ""
    try:
        der, version = server_certificate(ep, tls_context(cfg), timeout_s)
        data["tls_version"] = version
        verdicts.append((Status.OK, f"handshake {version} verified"))
    except ssl.SSLCertVerificationError as exc:
        verdicts.append((Status.FAIL, f"verification failed: {exc.verify_message}"))
        hint = "renew the broker certificate or fix mqtt.ca; check the clock"
        try:  # fetch the certificate anyway, only to report its dates
            der, _ = server_certificate(ep, tls_context(cfg, verify=False), timeout_s)
        except (OSError, ssl.SSLError):
            der = b""
    except SecretError as exc:
        return fail("tls", str(exc), "fix the file: secret's path or permissions", **data)
    except (OSError, ssl.SSLError) as exc:
        return fail(
            "tls",
            f"handshake with {ep} failed: {exc}",
            "check mqtt.ca/cert/key paths and that the port speaks TLS",
            **data,
        )
    if der:
        cert = x509.load_der_x509_certificate(der)
        data["server_not_after"] = cert.not_valid_after_utc.isoformat()
        verdicts.append(judge_expiry("server certificate", cert, moment))
    for label, path in (("CA", cfg.ca), ("client certificate", cfg.cert)):
        if path:
            certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
            soonest = min(certs, key=lambda c: c.not_valid_after_utc)
            verdicts.append(judge_expiry(f"{label} {Path(path).name}", soonest, moment))
    status = worst(s for s, _ in verdicts)
    detail = "; ".join(text for _, text in verdicts)
    if status is Status.OK:
        return ok("tls", detail, **data)
    hint = hint or "renew the certificate before it expires (broker and client side)"
    if status is Status.WARN:
        return warn("tls", detail, hint, **data)
    return fail("tls", detail, hint, **data)

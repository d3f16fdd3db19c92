"""The manifest's HTTPS source: strict parsing, ``bundle create --https-url``, reply decisions."""

from __future__ import annotations

import email.message
import http.client
from pathlib import Path
from typing import Any

import pytest

from agent.config.update import UpdateConfig
from agent.errors import Reason, SourceError, VerificationError
from agent.fleet.bundle import BundleSpec, manifest_document
from agent.fleet.cli import main
from agent.update.store.bundle import read_manifest
from agent.update.transfer.https_client import parse_reply
from agent.update.transfer.wiring import https_settings
from agent.update.trust.envelope import canonical_bytes, parse_envelope
from agent.update.trust.manifest import HttpsSource, parse_manifest
from agent.update.trust.verify import MAX_ENVELOPE_BYTES

GOOD = "https://cdn.example.com:8443/models/det-7/"


def _doc(model: Path, url: str = GOOD) -> dict[str, Any]:
    spec = BundleSpec(model=model, slot="detector", fleet="f1", manifest_version=1, release=1)
    doc = manifest_document(spec, 1, 1_700_000_000.0, b"{}")
    doc["transfer"]["https"] = {"url": url, "mqtt_fallback": False}
    return doc


def test_https_source_parses(short_range_model: Path) -> None:
    manifest = parse_manifest(canonical_bytes(_doc(short_range_model)))
    assert manifest.https == HttpsSource(GOOD, mqtt_fallback=False)
    assert manifest.https.file_url("m.tflite") == GOOD + "m.tflite"
    doc = _doc(short_range_model)
    del doc["transfer"]["https"]
    assert parse_manifest(canonical_bytes(doc)).https is None
    doc["transfer"]["https"] = {"url": GOOD}
    assert parse_manifest(canonical_bytes(doc)).https == HttpsSource(GOOD, mqtt_fallback=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.com/models/",  # not TLS
        "ftp://cdn.example.com/models/",
        "https://user:secret@cdn.example.com/models/",  # credentials
        "https://token@cdn.example.com/models/",
        "https:///models/",  # no host
        "https://cdn.example.com/models",  # not a base (file names are appended)
        "https://cdn.example.com/models/?sig=abc",  # query
        "https://cdn.example.com/models/#x/",  # fragment
        "https://cdn.example.com:99999/models/",  # port out of range
        "https://cdn.example.com/mo dels/",  # whitespace
        "https://cdn.example.com/models/\r\nX: y/",  # header injection
        "https://cdn.example.com/" + "a" * 2048 + "/",  # over the length cap
        "",
    ],
)
def test_unsafe_urls_are_rejected_at_parse(short_range_model: Path, url: str) -> None:
    with pytest.raises(VerificationError) as err:
        parse_manifest(canonical_bytes(_doc(short_range_model, url)))
    assert err.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    "https",
    [
        {"url": GOOD, "headers": {"Authorization": "x"}},  # unknown field
        {"url": GOOD, "mqtt_fallback": "yes"},
        {"mqtt_fallback": True},
        GOOD,
    ],
)
def test_malformed_https_objects_are_rejected(short_range_model: Path, https: object) -> None:
    doc = _doc(short_range_model)
    doc["transfer"]["https"] = https
    with pytest.raises(VerificationError) as err:
        parse_manifest(canonical_bytes(doc))
    assert err.value.reason is Reason.MALFORMED


def test_bundle_create_https_url(
    tmp_path: Path, short_range_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert main(["keys", "init", str(keys)]) == 0
    common = [
        "bundle", "create", "--model", str(short_range_model), "--slot", "detector",
        "--fleet", "f1", "--manifest-version", "1", "--release", "1", "--keys", str(keys),
    ]  # fmt: skip
    out = tmp_path / "b"
    assert main([*common, "--out", str(out), "--https-url", GOOD, "--https-only"]) == 0
    envelope = parse_envelope(read_manifest(out), MAX_ENVELOPE_BYTES)
    assert parse_manifest(envelope.payload).https == HttpsSource(GOOD, mqtt_fallback=False)
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "c"), "--https-url", "http://x/m/"]) != 0
    assert "--https-url must be an https:// URL" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before anything was written
    assert main([*common, "--out", str(tmp_path / "d"), "--https-only"]) != 0
    assert "--https-only needs --https-url" in capsys.readouterr().err
    assert main([*common, "--out", str(tmp_path / "e")]) == 0
    plain = parse_envelope(read_manifest(tmp_path / "e"), MAX_ENVELOPE_BYTES)
    assert parse_manifest(plain.payload).https is None


def _headers(**values: str) -> http.client.HTTPMessage:
    msg = http.client.HTTPMessage()
    for key, value in values.items():
        msg[key.replace("_", "-")] = value
    assert isinstance(msg, email.message.Message)
    return msg


def test_reply_decisions() -> None:
    ok = parse_reply(206, _headers(Content_Range="bytes 100-199/1000", Content_Length="100"),
                     1000, 100, 199)  # fmt: skip
    assert (ok.status, ok.start, ok.length) == (206, 100, 100)
    whole = parse_reply(200, _headers(Content_Length="1000"), 1000, 100, 199)
    assert (whole.start, whole.length) == (0, 1000)  # Range ignored: the file from 0
    assert parse_reply(206, _headers(Content_Range="bytes 100-199/*"), 1000, 100, 199).start == 100
    with pytest.raises(ValueError, match="asked for"):
        parse_reply(206, _headers(Content_Range="bytes 101-199/1000"), 1000, 100, 199)
    with pytest.raises(ValueError, match="Content-Range"):
        parse_reply(206, _headers(), 1000, 100, 199)
    for status, headers in (
        (206, _headers(Content_Range="bytes 100-199/1001")),
        (200, _headers(Content_Length="999")),
    ):
        with pytest.raises(SourceError) as err:
            parse_reply(status, headers, 1000, 100, 199)
        assert err.value.reason is Reason.LENGTH_MISMATCH
        assert not err.value.transient
    with pytest.raises(SourceError) as err:
        parse_reply(200, _headers(Content_Encoding="gzip"), 1000, 0, 999)
    assert err.value.reason is Reason.DOWNLOAD_FAILED


def test_config_maps_to_fetcher_settings() -> None:
    cfg = UpdateConfig(
        https_ca_file="/etc/edge-agent/cdn-ca.pem",
        https_connect_timeout_s=3,
        https_read_timeout_s=7,
        https_allowed_hosts=["CDN.Example.com"],
        https_max_range_bytes=1 << 20,
    )
    settings = https_settings(cfg)
    assert settings.ca_file == "/etc/edge-agent/cdn-ca.pem"
    assert (settings.connect_timeout_s, settings.read_timeout_s) == (3, 7)
    assert settings.allowed_hosts == ("cdn.example.com",)
    assert settings.max_range_bytes == 1 << 20
    with pytest.raises(ValueError, match="bare host"):
        UpdateConfig(https_allowed_hosts=["https://cdn.example.com/"])

"""The HTTPS bundle source against a real HTTPS server on 127.0.0.1 (real TLS, real files)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import DownloadError, Reason, SourceError
from agent.fleet.bundle import BundleSpec, create_bundle
from agent.fleet.keys import init_keys
from agent.update.store.bundle import CHUNK_INDEX_FILE, read_manifest
from agent.update.transfer.bitmap import load_bitmap
from agent.update.transfer.https_client import HttpsSettings
from agent.update.transfer.https_source import HttpsFetcher
from agent.update.transfer.session import Progress
from agent.update.trust.envelope import parse_envelope
from agent.update.trust.manifest import Manifest, parse_manifest
from agent.update.trust.verify import MAX_ENVELOPE_BYTES
from tests.support.https_server import HttpsFileServer, Pki, make_pki

CHUNK = 16384
MODEL = "m.tflite"
LENGTH = 300_000  # 19 chunks, the last one short


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    init_keys(path)
    return path


@pytest.fixture
def server(tmp_path: Path, pki: Pki) -> Iterator[HttpsFileServer]:
    (tmp_path / "www").mkdir()
    srv = HttpsFileServer(tmp_path / "www", pki).start()
    yield srv
    srv.stop()


@dataclass
class Case:
    manifest: Manifest
    model: bytes
    directory: Path
    fetcher: HttpsFetcher
    server: HttpsFileServer


def _bundle(keys: Path, server: HttpsFileServer, tmp_path: Path, url: str = "") -> Manifest:
    model = tmp_path / MODEL
    model.write_bytes(os.urandom(LENGTH))
    spec = BundleSpec(
        model=model,
        slot="detector",
        fleet="f1",
        manifest_version=1,
        release=1,
        chunk_size=CHUNK,
        https_url=url or server.url("/bundles/b1/"),
        mqtt_fallback=False,
    )
    create_bundle(spec, keys, server.root)
    return parse_manifest(parse_envelope(read_manifest(server.root), MAX_ENVELOPE_BYTES).payload)


def _settings(pki: Pki, **kw: object) -> HttpsSettings:
    base: dict[str, object] = {
        "ca_file": str(pki.ca),
        "connect_timeout_s": 2.0,
        "read_timeout_s": 2.0,
        "max_range_bytes": 4 * CHUNK,
        "retry_base_s": 0.01,
        "retry_cap_s": 0.05,
    }
    base.update(kw)
    return HttpsSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def case(keys: Path, server: HttpsFileServer, tmp_path: Path, pki: Pki) -> Case:
    manifest = _bundle(keys, server, tmp_path)
    fetcher = HttpsFetcher(_settings(pki), threading.Event())
    return Case(manifest, (server.root / MODEL).read_bytes(), tmp_path / "xfer", fetcher, server)


def _fetch(case: Case, *, deadline_s: float = 30.0, stop_after: int | None = None) -> Path | None:
    seen: list[Progress] = []

    def keep_going() -> bool:
        return stop_after is None or len(seen) < stop_after

    return case.fetcher.fetch(case.manifest, case.directory, deadline_s, keep_going, seen.append)


def _done(case: Case, files_dir: Path | None) -> None:
    assert files_dir is not None
    assert (files_dir / MODEL).read_bytes() == case.model


def test_ranges_resume_after_a_dropped_connection(case: Case) -> None:
    case.server.faults.drop_at, case.server.faults.drop_file = 100_000, MODEL
    _done(case, _fetch(case))
    ranges = case.server.ranges(MODEL)
    # Four-chunk ranges; the connection dropped inside the second one, and the retry asked
    # for the first chunk not yet verified (98304 = 6 x 16384), not from the start.
    assert ranges[:2] == ["bytes=0-65535", "bytes=65536-131071"]
    assert ranges[2].startswith("bytes=98304-")
    assert case.fetcher.last_stats.retries == 1
    # What the server sent again is less than one chunk (the partial one that was cut).
    assert LENGTH <= case.server.sent(MODEL) < LENGTH + CHUNK


def test_restart_resumes_from_the_bitmap_with_a_range_request(case: Case, pki: Pki) -> None:
    assert _fetch(case, stop_after=6) is None  # stopped (daemon shutdown): resumable
    bitmap = load_bitmap(case.directory / "bitmap", -(-LENGTH // CHUNK))
    assert bitmap.count == 6
    sent_before = case.server.sent(MODEL)
    case.fetcher = HttpsFetcher(_settings(pki), threading.Event())  # a new process
    _done(case, _fetch(case))
    after = case.server.ranges(MODEL)[2:]
    assert after[0] == f"bytes={6 * CHUNK}-{10 * CHUNK - 1}"
    assert len(case.server.ranges(CHUNK_INDEX_FILE)) == 1  # the verified index was kept
    assert case.server.sent(MODEL) - sent_before == LENGTH - 6 * CHUNK


def test_server_ignoring_range_sends_whole_file_and_nothing_is_corrupted(case: Case) -> None:
    case.server.faults.drop_at, case.server.faults.drop_file = 50_000, MODEL
    case.server.faults.ignore_range = True
    _done(case, _fetch(case))
    statuses = [s for p, _, s in case.server.stats.requests if p.endswith(MODEL)]
    assert statuses == [200, 200]  # cut at 50 000, then the whole file again from 0
    assert case.server.sent(MODEL) == 50_000 + LENGTH


def test_server_ignoring_range_costs_one_whole_file(case: Case) -> None:
    case.server.faults.ignore_range = True
    _done(case, _fetch(case))
    assert case.server.ranges(MODEL) == ["bytes=0-65535"]  # answered with all 300 000 bytes
    assert case.server.sent(MODEL) == LENGTH


def test_wrong_content_range_is_dropped_and_whole_files_are_fetched(case: Case) -> None:
    case.server.faults.wrong_range = True
    _done(case, _fetch(case))
    assert case.fetcher.last_stats.whole_file
    assert case.server.ranges(MODEL) == ["bytes=0-65535", ""]  # then no Range at all


def test_corrupted_chunk_is_rejected_and_fetched_again(case: Case) -> None:
    case.server.faults.corrupt_at, case.server.faults.corrupt_file = 40_000, MODEL
    _done(case, _fetch(case))
    assert case.fetcher.last_stats.rejected == 1
    assert "bytes=32768-49151" in case.server.ranges(MODEL)  # chunk 2 alone, asked again


def test_chunk_corrupted_every_time_fails_with_hash_mismatch(case: Case) -> None:
    faults = case.server.faults
    faults.corrupt_at, faults.corrupt_file, faults.corrupt_times = 40_000, MODEL, -1
    with pytest.raises(SourceError) as err:
        _fetch(case)
    assert err.value.reason is Reason.HASH_MISMATCH
    assert not err.value.transient
    part = (case.directory / "files" / MODEL).read_bytes()
    assert part[2 * CHUNK : 3 * CHUNK] == bytes(CHUNK)  # the damaged chunk was never written
    assert part[: 2 * CHUNK] == case.model[: 2 * CHUNK]


def test_http_error_status_fails_for_good(case: Case) -> None:
    case.server.faults.status = 404
    with pytest.raises(SourceError) as err:
        _fetch(case)
    assert err.value.reason is Reason.DOWNLOAD_FAILED
    assert err.value.data["http_status"] == 404
    assert not err.value.transient


def test_file_of_another_length_at_the_url_is_a_length_mismatch(case: Case) -> None:
    (case.server.root / MODEL).write_bytes(case.model + b"x")
    with pytest.raises(SourceError) as err:
        _fetch(case)
    assert err.value.reason is Reason.LENGTH_MISMATCH


@pytest.mark.parametrize("ca", ["other", "system"])
def test_untrusted_certificate_is_refused(case: Case, tmp_path: Path, ca: str) -> None:
    ca_file = str(make_pki(tmp_path / "other").ca) if ca == "other" else ""
    case.fetcher = HttpsFetcher(HttpsSettings(ca_file=ca_file), threading.Event())
    with pytest.raises(SourceError) as err:
        _fetch(case)
    assert err.value.reason is Reason.DOWNLOAD_FAILED
    assert "TLS verification" in err.value.message
    assert case.server.stats.requests == []  # not one request went out


def test_host_not_allowed_is_refused_before_connecting(case: Case, pki: Pki) -> None:
    case.fetcher = HttpsFetcher(
        _settings(pki, allowed_hosts=("cdn.example.com",)), threading.Event()
    )
    with pytest.raises(SourceError) as err:
        _fetch(case)
    assert err.value.reason is Reason.DOWNLOAD_FAILED
    assert case.server.stats.requests == []


def test_refused_connections_are_retried_until_the_deadline(
    keys: Path, server: HttpsFileServer, tmp_path: Path, pki: Pki
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    manifest = _bundle(keys, server, tmp_path, url=f"https://127.0.0.1:{port}/b/")
    fetcher = HttpsFetcher(_settings(pki), threading.Event())
    with pytest.raises(DownloadError) as err:
        fetcher.fetch(manifest, tmp_path / "xfer", 0.3, lambda: True, lambda _p: None)
    assert err.value.reason is Reason.SLOW_TRANSFER
    assert fetcher.last_stats.retries >= 2

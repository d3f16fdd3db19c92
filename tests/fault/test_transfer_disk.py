"""A model transfer on a small state disk (issue 18, item 4).

Real Mosquitto, a real device (link + installer + update service) whose state directory
is a 16 MB tmpfs (``small_fs``; where this process may not mount, the free-space seam).
Before: a signed bundle larger than the free space filled the disk to 0 bytes and left
the op at ``downloading``; an ENOSPC mid-transfer was never reported; a failed transfer
kept its partial files for ever.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.fault.conftest import SmallFs
from tests.integration.test_delivery import (
    Device,
    make_bundle,
    publish,
    serve,
    start_device,
)
from tests.support.mosquitto import MosquittoBroker
from tests.support.waiting import wait_for

pytestmark = pytest.mark.broker


def device_on(broker: MosquittoBroker, keys: Path, fs: SmallFs, **settings: Any) -> Device:
    # A real tmpfs answers for itself; elsewhere the free-space seam stands in for it.
    if not fs.real:
        settings["free_bytes"] = lambda _p: fs.free_bytes()
    return start_device(broker, keys, fs.path / "state", **settings)


def padded(tmp_path: Path, model: Path, megabytes: int) -> dict[str, Any]:
    extra = tmp_path / f"pad-{megabytes}.bin"
    extra.write_bytes(os.urandom(megabytes << 20))
    return {"extra_files": [extra]}


def partials(device: Device) -> list[Path]:
    root = device.state_dir / "transfer"
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def test_bundle_larger_than_the_free_space_is_refused_before_the_first_chunk(
    mosquitto, operator, keys, tmp_path, *, small_fs: SmallFs, short_range_model
):
    bundle = make_bundle(
        keys, tmp_path / "big", short_range_model, 1, **padded(tmp_path, short_range_model, 20)
    )
    server, server_stop = serve(operator, bundle)
    device = device_on(mosquitto, keys, small_fs)
    free_before = small_fs.free_bytes()
    try:
        dep = publish(operator, bundle)
        final = operator.wait_terminal("cam-1", dep, timeout_s=15)
        assert (final["status"], final["reason"]) == ("failed", "insufficient_space"), final
        assert [d["status"] for d in operator.docs("cam-1", dep)] == ["failed"]  # no download
        assert server.stats.requests == 0  # not a chunk (nor the index) was asked for
        assert partials(device) == []
        assert small_fs.free_bytes() >= free_before - (1 << 20)
        assert device.installer.store.current_sha("detector") is None
    finally:
        device.close()
        server_stop.set()
        server.join()


def test_enospc_mid_transfer_fails_the_op_frees_the_partial_and_a_later_update_works(
    mosquitto, operator, keys, tmp_path, *, small_fs: SmallFs, short_range_model
):
    if not small_fs.real:
        pytest.skip(
            reason="needs a real tmpfs (root) to hit ENOSPC; the refusal above runs anywhere"
        )
    gate = threading.Event()  # after the first frames, nothing more until the disk is full
    passed = [0]

    def first_frames_then_gate(frames: list[bytes]) -> list[bytes]:
        if gate.is_set() or passed[0] < 24:
            passed[0] += len(frames)
            return frames
        return []

    bundle = make_bundle(
        keys,
        tmp_path / "mid",
        short_range_model,
        1,
        chunk_size=65536,
        **padded(tmp_path, short_range_model, 6),
    )
    server, server_stop = serve(operator, bundle, mangle=first_frames_then_gate)
    device = device_on(mosquitto, keys, small_fs, progress_interval_s=0.05)
    try:
        dep = publish(operator, bundle)

        def chunks_done() -> int:
            docs = [d for d in operator.docs("cam-1", dep) if "progress" in d]
            return int(docs[-1]["progress"]["chunks_done"]) if docs else 0  # type: ignore[index]

        assert wait_for(lambda: chunks_done() > 0, timeout_s=15)
        small_fs.fill()  # a runaway log takes every free byte
        gate.set()
        final = operator.wait_terminal("cam-1", dep, timeout_s=20)
        assert (final["status"], final["reason"]) == ("failed", "insufficient_space"), final
        assert partials(device) == []  # the partial transfer went with the terminal state
        assert device.installer.store.current_sha("detector") is None
        small_fs.release()
        fixed = make_bundle(keys, tmp_path / "v2", short_range_model, 2)
        server_stop.set()
        server.join()
        server, server_stop = serve(operator, fixed)
        dep2 = publish(operator, fixed)
        assert operator.wait_terminal("cam-1", dep2, timeout_s=20)["status"] == "successful"
    finally:
        device.close()
        server_stop.set()
        server.join()


def test_a_failed_transfer_leaves_no_partial_files(
    mosquitto, operator, keys, tmp_path, *, small_fs: SmallFs, short_range_model
):
    # No chunk ever comes: the deadline ends it (slow_transfer); its part files must go.
    bundle = make_bundle(keys, tmp_path / "slow", short_range_model, 1, chunk_size=8192)
    stalled = {"index": False}

    def index_only(frames: list[bytes]) -> list[bytes]:
        stalled["index"] = True
        return frames if len(frames) and frames[0][4] == 1 else []  # index pieces pass

    server, server_stop = serve(operator, bundle, mangle=index_only)
    device = device_on(mosquitto, keys, small_fs, deadline_s=3.0)
    try:
        dep = publish(operator, bundle)
        final = operator.wait_terminal("cam-1", dep, timeout_s=15)
        assert final["status"] == "failed", final
        assert final["reason"] in ("slow_transfer", "too_large"), final
        assert stalled["index"]
        assert partials(device) == []
    finally:
        device.close()
        server_stop.set()
        server.join()

"""Wire format of the chunk transfer: topics, request JSON and binary chunk frames.

Documented in docs/protocol.md. A frame is a fixed 47-byte header then the payload:
``b"EAC1" | kind u8 | file u16 | index u32 | length u32 | sha256 32B | payload``
(big endian). ``kind`` 0 is chunk ``index`` of bundle file ``file``; kind 1 is
piece ``index`` of the bundle's chunk index (``file`` 0); kind 2 is an
acknowledgement whose payload names the requests its batch answered (empty from
older servers). The header hash only catches transport damage early; what
decides is the chunk index bound to the signed manifest.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any

MAGIC = b"EAC1"
_HEADER = struct.Struct(">4sBHII32s")
HEADER_BYTES = _HEADER.size
MAX_REQUEST_ITEMS = 256
_ANSWERED = struct.Struct(">II")  # (listener, seq) of a request an ack frame answers
_U32 = 0xFFFFFFFF
MAX_ANSWERED = 1024  # pairs per ack frame (8 KiB); a server names more in further acks


class FrameKind(enum.IntEnum):
    CHUNK = 0
    INDEX = 1
    # index = frames the server published for the batch it answers. Acks after non-empty
    # batches with no chunk ever arriving mean a broker size limit, not no server. The
    # payload (empty from older servers) names the requests the batch answered.
    ACK = 2


class FrameError(ValueError):
    """A frame or request that cannot be decoded; the receiver drops and counts it."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    file: int
    index: int
    payload: bytes | memoryview  # a view into the received message: chunks are not copied
    sha256: bytes

    @property
    def header_ok(self) -> bool:
        return hashlib.sha256(self.payload).digest() == self.sha256


def encode_frame(
    kind: FrameKind,
    file: int,
    index: int,
    payload: bytes | memoryview,
    sha256: bytes | None = None,
) -> bytes:
    digest = sha256 if sha256 is not None else hashlib.sha256(payload).digest()
    return _HEADER.pack(MAGIC, int(kind), file, index, len(payload), digest) + payload


def chunk_frame_buffer(
    file: int, index: int, length: int, sha256: bytes
) -> tuple[bytearray, memoryview]:
    """A chunk frame with its header packed and the view its ``length`` payload bytes go in.

    Lets the server read a chunk straight into the frame (one buffer, no concatenation).
    """
    buffer = bytearray(HEADER_BYTES + length)
    _HEADER.pack_into(buffer, 0, MAGIC, int(FrameKind.CHUNK), file, index, length, sha256)
    return buffer, memoryview(buffer)[HEADER_BYTES:]


def decode_frame(data: bytes) -> Frame:
    if len(data) < HEADER_BYTES:
        raise FrameError("frame shorter than its header")
    magic, kind, file, index, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError("bad frame magic")
    try:
        frame_kind = FrameKind(kind)
    except ValueError as exc:
        raise FrameError(f"unknown frame kind {kind}") from exc
    payload = memoryview(data)[HEADER_BYTES:]
    if len(payload) != length:
        raise FrameError(f"frame says {length} bytes, carries {len(payload)}")
    return Frame(frame_kind, file, index, payload, digest)


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """Device -> server: chunk ``(file, index)`` pairs and chunk indexes (by file number).

    ``listener`` is a random token per stream subscription: the server learns when this
    device started listening, so it resends a recently streamed chunk only to a device
    that cannot have seen it (joined later), not to one that is merely behind. ``seq``
    numbers the listener's requests; a server names ``(listener, seq)`` in the ack frame
    after the batch that answered it, so the device knows, once it has read that ack,
    that whatever it still lacks of the request was lost, not queued ahead of it.
    ``again`` lists the chunks of ``chunks`` asked for before (lost or stalled): with
    ``seq``, the server skips every other chunk that went out while the device listened
    (it is in the device's backlog, however long ago), and re-sends these.
    """

    chunks: tuple[tuple[int, int], ...] = ()
    indexes: tuple[int, ...] = ()
    listener: int | None = None
    seq: int | None = None
    again: tuple[tuple[int, int], ...] = ()

    def encode(self) -> bytes:
        body: dict[str, Any] = {"chunks": [list(c) for c in self.chunks]}
        if self.indexes:
            body["index"] = list(self.indexes)
        if self.listener is not None:
            body["s"] = self.listener
        if self.seq is not None:
            body["q"] = self.seq
        if self.again:
            body["r"] = [list(c) for c in self.again]
        return json.dumps(body, separators=(",", ":")).encode("utf-8")


def answerable(request: ChunkRequest) -> tuple[int, int] | None:
    """The ``(listener, seq)`` an ack may name for this request (None: it has no 32-bit pair)."""
    if request.listener is None or request.seq is None:
        return None
    if request.listener > _U32 or request.seq > _U32:
        return None
    return request.listener, request.seq


def encode_answered(pairs: list[tuple[int, int]]) -> bytes:
    """An ack frame's payload: the ``(listener, seq)`` of each request its batch answered."""
    return b"".join(_ANSWERED.pack(listener, seq) for listener, seq in pairs)


def decode_answered(payload: bytes | memoryview) -> list[tuple[int, int]]:
    if len(payload) % _ANSWERED.size or len(payload) > MAX_ANSWERED * _ANSWERED.size:
        raise FrameError(f"ack payload of {len(payload)} bytes is not a list of answered requests")
    return [(listener, seq) for listener, seq in _ANSWERED.iter_unpack(payload)]


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FrameError(f"expected a non-negative integer, got {value!r}")
    return value


def decode_request(data: bytes) -> ChunkRequest:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError("request is not JSON") from exc
    if not isinstance(body, dict):
        raise FrameError("request must be a JSON object")
    raw_chunks = body.get("chunks", [])
    raw_index = body.get("index", [])
    raw_again = body.get("r", [])
    if not all(isinstance(raw, list) for raw in (raw_chunks, raw_index, raw_again)):
        raise FrameError("chunks, index and r must be lists")
    if len(raw_chunks) + len(raw_index) > MAX_REQUEST_ITEMS or len(raw_again) > len(raw_chunks):
        raise FrameError("request too long")
    chunks = _pairs(raw_chunks)
    again = _pairs(raw_again)
    raw_listener = body.get("s")
    listener = None if raw_listener is None else _non_negative_int(raw_listener)
    raw_seq = body.get("q")
    seq = None if raw_seq is None else _non_negative_int(raw_seq)
    return ChunkRequest(
        tuple(chunks),
        tuple(_non_negative_int(i) for i in raw_index),
        listener=listener,
        seq=seq,
        again=tuple(again),
    )


def _pairs(raw: list[Any]) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2:
            raise FrameError("each chunk is [file, index]")
        pairs.append((_non_negative_int(item[0]), _non_negative_int(item[1])))
    return pairs


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of the update path for one root; see docs/protocol.md."""

    root: str

    def deploy(self, fleet: str, slot: str) -> str:
        return f"{self.root}/f/{fleet}/deploy/{slot}"

    def deploy_filter(self, fleet: str) -> str:
        return f"{self.root}/f/{fleet}/deploy/+"

    def trust_root(self, fleet: str) -> str:
        return f"{self.root}/f/{fleet}/trust/root"

    def trust_root_version(self, fleet: str, version: int) -> str:
        """Root version ``version``, retained on its own topic: the chain a device walks."""
        return f"{self.root}/f/{fleet}/trust/root/{version}"

    def trust_root_versions(self, fleet: str) -> str:
        return f"{self.root}/f/{fleet}/trust/root/+"

    def heartbeat(self, fleet: str) -> str:
        return f"{self.root}/f/{fleet}/heartbeat"

    def stream(self, fleet: str, deployment_id: str) -> str:
        return f"{self.root}/f/{fleet}/xfer/{deployment_id}/s"

    def request(self, device: str, deployment_id: str) -> str:
        return f"{self.root}/d/{device}/xfer/{deployment_id}/req"

    def request_filter(self, deployment_id: str = "+") -> str:
        return f"{self.root}/d/+/xfer/{deployment_id}/req"

    def op(self, device: str, op: str, cmd_id: str) -> str:
        return f"{self.root}/d/{device}/op/{op}/{cmd_id}"

    def model_update(self, device: str, deployment_id: str) -> str:
        return self.op(device, "model_update", deployment_id)

    def model_update_filter(self, deployment_id: str = "+") -> str:
        return f"{self.root}/d/+/op/model_update/{deployment_id}"

    def alarm(self, device: str, name: str) -> str:
        return f"{self.root}/d/{device}/a/{name}"

    def cmd(self, device: str, op: str, cmd_id: str) -> str:
        return f"{self.root}/d/{device}/cmd/{op}/{cmd_id}"

    def device_of(self, topic: str) -> str | None:
        """The ``<dev>`` segment of a device topic under this root, else None."""
        prefix = f"{self.root}/d/"
        if not topic.startswith(prefix):
            return None
        device, _, _ = topic[len(prefix) :].partition("/")
        return device or None

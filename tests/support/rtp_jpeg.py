"""Motion-JPEG over RTP (RFC 2435) for the test RTSP server: JPEG parsing and packetizing.

A baseline JPEG from ``cv2.imencode`` is split into what RFC 2435 carries: the frame
size in 8-pixel units, the type (1 = 4:2:0 YCbCr), the quantization tables (sent in-band,
Q = 255) and the entropy-coded scan data. The receiver rebuilds the JPEG headers itself
with the standard Huffman tables, so anything else (other sampling, restart intervals,
optimized Huffman tables, progressive mode) is refused loudly instead of decoding wrong.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

PAYLOAD_TYPE = 26  # RFC 3551: JPEG, 90 kHz clock
CLOCK_HZ = 90_000
MAX_PAYLOAD = 1400  # bytes of JPEG data per packet: a typical MTU-sized fragment
TYPE_420 = 1
Q_INBAND = 255  # tables travel in the first packet of every frame

# Number of codes per length (1..16) of the standard tables of ITU T.81 Annex K.3,
# keyed by (class, id): 0 = DC, 1 = AC; id 0 = luminance, 1 = chrominance.
STANDARD_HUFFMAN_BITS = {
    (0, 0): bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
    (0, 1): bytes([0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]),
    (1, 0): bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D]),
    (1, 1): bytes([0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77]),
}


class JpegLayoutError(ValueError):
    """The JPEG cannot be carried as RFC 2435 type 1 with in-band tables."""


@dataclass(frozen=True)
class RtpJpegFrame:
    width: int
    height: int
    qtables: bytes  # luminance then chrominance, 64 bytes each, in zigzag (DQT) order
    scan: bytes  # entropy-coded data between the SOS header and EOI


def _segments(data: bytes) -> list[tuple[int, bytes, int]]:
    """(marker, segment body, offset after the segment) up to and including SOS."""
    if data[:2] != b"\xff\xd8":
        raise JpegLayoutError("not a JPEG (no SOI)")
    out, pos = [], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise JpegLayoutError(f"expected a marker at byte {pos}")
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        body = data[pos + 4 : pos + 2 + length]
        pos += 2 + length
        out.append((marker, body, pos))
        if marker == 0xDA:
            return out
    raise JpegLayoutError("no SOS segment")


def _check_sof0(body: bytes) -> tuple[int, int]:
    precision, height, width, count = struct.unpack_from(">BHHB", body)
    comps = [body[6 + 3 * i : 9 + 3 * i] for i in range(count)]
    sampling = [c[1] for c in comps]
    tables = [c[2] for c in comps]
    if precision != 8 or count != 3 or sampling != [0x22, 0x11, 0x11] or tables != [0, 1, 1]:
        raise JpegLayoutError(
            f"need 8-bit YCbCr 4:2:0 with Q tables 0,1,1 (RFC 2435 type 1); got precision "
            f"{precision}, sampling {[hex(s) for s in sampling]}, tables {tables}"
        )
    if width % 8 or height % 8 or width > 2040 or height > 2040:
        raise JpegLayoutError(f"{width}x{height} is not a multiple of 8 up to 2040")
    return width, height


def _qtables(body: bytes, found: dict[int, bytes]) -> None:
    pos = 0
    while pos < len(body):
        precision, table_id = body[pos] >> 4, body[pos] & 0x0F
        if precision != 0:
            raise JpegLayoutError("16-bit quantization tables are not supported")
        found[table_id] = body[pos + 1 : pos + 65]
        pos += 65


def _check_huffman(body: bytes) -> None:
    pos = 0
    while pos < len(body):
        klass, table_id = body[pos] >> 4, body[pos] & 0x0F
        bits = body[pos + 1 : pos + 17]
        if STANDARD_HUFFMAN_BITS.get((klass, table_id)) != bits:
            raise JpegLayoutError(f"Huffman table {klass}/{table_id} is not the standard one")
        pos += 17 + sum(bits)


def parse_jpeg(data: bytes) -> RtpJpegFrame:
    """Split a baseline 4:2:0 JPEG into what RFC 2435 carries; JpegLayoutError otherwise."""
    qtables: dict[int, bytes] = {}
    size: tuple[int, int] | None = None
    segments = _segments(data)
    for marker, body, _ in segments:
        if marker == 0xC0:
            size = _check_sof0(body)
        elif 0xC1 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            raise JpegLayoutError(f"SOF{marker - 0xC0}: only baseline (SOF0) is carried")
        elif marker == 0xDB:
            _qtables(body, qtables)
        elif marker == 0xC4:
            _check_huffman(body)
        elif marker == 0xDD and struct.unpack(">H", body[:2])[0] != 0:
            raise JpegLayoutError("restart intervals need RFC 2435 types 64-127")
    if size is None:
        raise JpegLayoutError("no SOF0 segment")
    if sorted(qtables) != [0, 1]:
        raise JpegLayoutError(f"need quantization tables 0 and 1, got {sorted(qtables)}")
    scan = data[segments[-1][2] :]
    if scan.endswith(b"\xff\xd9"):
        scan = scan[:-2]  # the receiver appends EOI itself
    return RtpJpegFrame(size[0], size[1], qtables[0] + qtables[1], scan)


def encode_frame(image: npt.NDArray[np.uint8], quality: int = 80) -> RtpJpegFrame:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise JpegLayoutError("cv2.imencode failed")
    return parse_jpeg(encoded.tobytes())


def payloads(frame: RtpJpegFrame, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """The RTP payloads of one frame (JPEG header + data), in order; fragment offsets set."""
    out = []
    offset = 0
    while offset < len(frame.scan) or not out:
        main = struct.pack(
            ">B3sBBBB",
            0,  # type-specific
            offset.to_bytes(3, "big"),
            TYPE_420,
            Q_INBAND,
            frame.width // 8,
            frame.height // 8,
        )
        if offset == 0:  # Quantization Table header: MBZ, precision 0 (8-bit), length
            main += struct.pack(">BBH", 0, 0, len(frame.qtables)) + frame.qtables
        chunk = frame.scan[offset : offset + max_payload]
        out.append(main + chunk)
        offset += len(chunk)
    return out


def rtp_packets(parts: list[bytes], seq: int, timestamp: int, ssrc: int) -> tuple[list[bytes], int]:
    """RTP packets for one frame's payloads (marker on the last); returns them and the next seq."""
    packets = []
    for index, part in enumerate(parts):
        marker = 0x80 if index == len(parts) - 1 else 0
        header = struct.pack(
            ">BBHII", 0x80, marker | PAYLOAD_TYPE, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
        )
        packets.append(header + part)
        seq += 1
    return packets, seq

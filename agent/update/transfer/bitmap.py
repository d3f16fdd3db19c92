"""Which chunks of a transfer are present: a bit per chunk, persisted so a restart resumes."""

from __future__ import annotations

from pathlib import Path

from agent.fsutil import atomic_write_bytes

_MAGIC = b"EABM1"


class ChunkBitmap:
    """A fixed-size set of chunk indices; ``add`` of a present index is a no-op (duplicates)."""

    __slots__ = ("_bits", "_count", "size")

    def __init__(self, size: int, bits: bytes | None = None) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        nbytes = (size + 7) // 8
        self._bits = bytearray(bits if bits is not None else nbytes)
        if len(self._bits) != nbytes:
            raise ValueError(f"bitmap of {size} chunks needs {nbytes} bytes, got {len(self._bits)}")
        # Bits beyond ``size`` in the last byte must be clear, or counts would lie.
        if size % 8 and nbytes and self._bits[-1] >> (size % 8):
            raise ValueError("bits set beyond the bitmap size")
        self._count = sum(b.bit_count() for b in self._bits)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int) or not 0 <= index < self.size:
            return False
        return bool(self._bits[index >> 3] & (1 << (index & 7)))

    def add(self, index: int) -> bool:
        """Set the bit; True when it was not set before."""
        if not 0 <= index < self.size:
            raise IndexError(index)
        mask = 1 << (index & 7)
        if self._bits[index >> 3] & mask:
            return False
        self._bits[index >> 3] |= mask
        self._count += 1
        return True

    def discard(self, index: int) -> None:
        if index in self:
            self._bits[index >> 3] &= ~(1 << (index & 7)) & 0xFF
            self._count -= 1

    @property
    def count(self) -> int:
        return self._count

    @property
    def complete(self) -> bool:
        return self._count == self.size

    def missing(self, limit: int | None = None) -> list[int]:
        """Missing indices in ascending order, at most ``limit`` of them."""
        out: list[int] = []
        for byte_no, byte in enumerate(self._bits):
            if byte == 0xFF:
                continue
            base = byte_no * 8
            for bit in range(8):
                index = base + bit
                if index >= self.size:
                    break
                if not byte & (1 << bit):
                    out.append(index)
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    def to_bytes(self) -> bytes:
        return _MAGIC + self.size.to_bytes(4, "big") + bytes(self._bits)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChunkBitmap:
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            raise ValueError("not a chunk bitmap")
        size = int.from_bytes(data[len(_MAGIC) : len(_MAGIC) + 4], "big")
        return cls(size, data[len(_MAGIC) + 4 :])


def load_bitmap(path: Path, size: int) -> ChunkBitmap:
    """The persisted bitmap, or an empty one when it is missing, corrupt or for another size.

    Starting over is always safe: every chunk is re-verified against the index anyway.
    """
    try:
        bitmap = ChunkBitmap.from_bytes(path.read_bytes())
    except (OSError, ValueError):
        return ChunkBitmap(size)
    return bitmap if bitmap.size == size else ChunkBitmap(size)


def save_bitmap(path: Path, bitmap: ChunkBitmap) -> None:
    atomic_write_bytes(path, bitmap.to_bytes(), mode=0o600)

"""A real ``TransferSession`` whose chunk index is still to arrive, its parsing faked.

Tests of the device side of delivery feed it index pieces and chunks by hand: random
bundle bytes cut into ``chunks`` chunks, and random bytes standing in for the index
(``parse_index`` returns the table of those chunks whatever the pieces hold).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from agent.update.transfer.planner import PlannerLimits
from agent.update.transfer.session import IndexRef, TransferSession
from agent.update.transfer.table import table_from_bytes

CHUNK = 64


@dataclass(frozen=True)
class FakedIndexSession:
    session: TransferSession
    data: bytes  # the bundle's one file, ``chunks`` * CHUNK bytes
    index: bytes  # the index's bytes, as the stream's index pieces carry them


def faked_index_session(
    directory: Path,
    *,
    chunks: int,
    limits: PlannerLimits,
    now_s: float = 0.0,
    index_bytes: int = 100,
    listener: int | None = None,
) -> FakedIndexSession:
    data = os.urandom(chunks * CHUNK)
    table = table_from_bytes(CHUNK, [("m.bin", len(data), hashlib.sha256(data).hexdigest())], data)
    index = os.urandom(index_bytes)
    session = TransferSession(
        directory=directory,
        index_ref=IndexRef(len(index), hashlib.sha256(index).hexdigest(), CHUNK),
        parse_index=lambda _b: table,
        limits=limits,
        now_s=now_s,
        listener=listener,
    )
    return FakedIndexSession(session, data, index)

"""Socket options shared by the device link and the operator's MQTT client."""

from __future__ import annotations

import contextlib
import socket
from typing import Any


def disable_nagle(_client: object, _userdata: object, sock: Any) -> None:
    """paho ``on_socket_open`` hook: send small packets at once.

    paho leaves Nagle's algorithm on, so a PUBACK, a chunk request or a detection that
    follows a write still in flight waits for the peer's delayed ACK (~40 ms on Linux).
    """
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket (e.g. a test pipe)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

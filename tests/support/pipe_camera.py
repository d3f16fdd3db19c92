"""A pipe-fed camera for capture tests: raw BGR frames through an OS pipe.

As from an ``ffmpeg -f rawvideo`` child: when the writer goes quiet, ``read()`` blocks in
``os.read``, the real shape of a stalled stream that no timeout inside the reader breaks.
Each ``open()`` makes a new pipe and closes the previous writer, as a camera that dropped
off the network and came back.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import numpy as np
import numpy.typing as npt


class PipeSource:
    def __init__(self, read_fd: int, width: int, height: int) -> None:
        self._fd = read_fd
        self._shape = (height, width, 3)
        self._frame_bytes = width * height * 3

    @property
    def nominal_fps(self) -> float:
        return 0.0

    @property
    def ended(self) -> bool:
        return False

    def read(self) -> npt.NDArray[np.uint8] | None:
        chunks, need = [], self._frame_bytes
        while need:
            try:
                chunk = os.read(self._fd, need)
            except OSError:
                return None
            if not chunk:
                return None  # the writer went away (the camera dropped off)
            chunks.append(chunk)
            need -= len(chunk)
        return np.frombuffer(b"".join(chunks), np.uint8).reshape(self._shape).copy()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


class PipeCamera:
    """A feeder thread writes a frame every 10 ms into the current pipe while ``feeding`` is set."""

    def __init__(self, width: int, height: int, name: str = "test-feeder") -> None:
        self.width, self.height = width, height
        self.write_fds: list[int] = []
        self.opens = 0
        self.feeding = threading.Event()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._feed, name=name, daemon=True)
        self._thread.start()

    def open(self) -> PipeSource:
        read_fd, write_fd = os.pipe()
        with self._lock:
            for fd in self.write_fds:  # the previous stream is gone for good
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.write_fds = [write_fd]
            self.opens += 1
        return PipeSource(read_fd, self.width, self.height)

    def _feed(self) -> None:
        value = 0
        frame_bytes = self.width * self.height * 3
        while not self.stop.is_set():
            if self.feeding.is_set():
                with self._lock:
                    fds = list(self.write_fds)
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.write(fd, bytes([value % 256]) * frame_bytes)
                value += 1
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(2)
        with self._lock:
            for fd in self.write_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.write_fds = []

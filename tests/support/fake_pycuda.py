"""A small stand-in for ``pycuda.driver``, for machines without an NVIDIA GPU.

It mimics the call shapes the TensorRT backend uses (``init``, ``Device``,
``make_context``/``push``/``pop``/``detach``, ``pagelocked_empty``, ``mem_alloc``,
``Stream``, ``memcpy_*_async``) and the behaviour that matters for correctness:

- device memory is separate from host memory and only changes through copies;
- async copies are queued on their stream and happen at ``synchronize()``, reading
  host memory then (as DMA does), so a missing synchronize shows up as stale data;
- every allocation, copy and stream operation needs a current context on the
  calling thread, and the context stack is per thread, so unbalanced push/pop or
  work on a thread without the context fails like ``cuInit``-less code would.

``FakeDriver.ops`` records the sequence of operations for assertions.
"""

from __future__ import annotations

import itertools
import sys
import threading
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest


class Error(Exception):
    """pycuda.driver.Error."""


class LogicError(Error):
    """pycuda.driver.LogicError (raised for misuse: no context, bad device, double free)."""


class FakeDriver:
    def __init__(
        self, device_count: int = 1, name: str = "Fake GPU", capability: tuple[int, int] = (8, 7)
    ) -> None:
        self.device_count = device_count
        self.gpu_name = name
        self.capability = capability
        self.initialised = False
        self.memory: dict[int, np.ndarray] = {}
        self.freed: list[int] = []
        self.pinned: list[np.ndarray] = []
        self.streams: dict[int, FakeStream] = {}
        self.contexts: list[FakeContext] = []
        self.ops: list[tuple[Any, ...]] = []
        self._local = threading.local()
        self._next_ptr = itertools.count(0x7F0000000000, 0x100000)
        self._next_handle = itertools.count(0x5000)

    # --- context stack ----------------------------------------------------------
    def stack(self) -> list[FakeContext]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        stack: list[FakeContext] = self._local.stack
        return stack

    def require_context(self, what: str) -> FakeContext:
        if not self.initialised:
            raise LogicError(f"{what}: cuInit has not been called")
        stack = self.stack()
        if not stack:
            raise LogicError(f"{what}: no CUDA context is current on this thread")
        if stack[-1].detached:
            raise LogicError(f"{what}: current context was detached")
        return stack[-1]

    # --- device memory ----------------------------------------------------------
    def device_bytes(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, block in self.memory.items():
            if base <= ptr and ptr + nbytes <= base + block.nbytes:
                return block[ptr - base : ptr - base + nbytes]
        raise LogicError(f"invalid device pointer 0x{ptr:x} (+{nbytes})")

    def enqueue(self, stream: FakeStream, op: tuple[Any, ...], action: Callable[[], None]) -> None:
        self.require_context(op[0])
        self.ops.append(op)
        stream.pending.append(action)

    def module(self) -> types.ModuleType:
        """A module object to install as ``sys.modules["pycuda.driver"]``."""
        driver = self
        mod = types.ModuleType("pycuda.driver")
        mod.Error = Error  # type: ignore[attr-defined]
        mod.LogicError = LogicError  # type: ignore[attr-defined]
        mod.Context = FakeContext  # type: ignore[attr-defined]

        def init(flags: int = 0) -> None:
            driver.initialised = True

        def device(index: int) -> FakeDevice:
            if not driver.initialised:
                raise LogicError("cuInit has not been called")
            if not 0 <= index < driver.device_count:
                raise LogicError(f"cuDeviceGet failed: invalid device ordinal {index}")
            return FakeDevice(driver, index)

        def pagelocked_empty(
            shape: Any, dtype: Any, order: str = "C", mem_flags: int = 0
        ) -> np.ndarray:
            driver.require_context("pagelocked_empty")
            array = np.empty(shape, dtype=dtype, order=order)  # type: ignore[call-overload]
            driver.pinned.append(array)
            return array

        def mem_alloc(nbytes: int) -> FakeAllocation:
            driver.require_context("mem_alloc")
            if nbytes <= 0:
                raise LogicError("mem_alloc of zero bytes")
            ptr = next(driver._next_ptr)
            driver.memory[ptr] = np.zeros(nbytes, dtype=np.uint8)
            driver.ops.append(("mem_alloc", ptr, nbytes))
            return FakeAllocation(driver, ptr)

        def stream(flags: int = 0) -> FakeStream:
            driver.require_context("Stream")
            created = FakeStream(driver, next(driver._next_handle))
            driver.streams[created.handle] = created
            return created

        def memcpy_htod_async(dest: Any, src: np.ndarray, stream: FakeStream | None = None) -> None:
            ptr, host = int(dest), src

            def action() -> None:
                view = host.reshape(-1).view(np.uint8)
                driver.device_bytes(ptr, view.nbytes)[:] = view

            driver.enqueue(_stream(stream), ("htod", ptr), action)

        def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: FakeStream | None = None) -> None:
            ptr, host = int(src), dest

            def action() -> None:
                view = host.reshape(-1).view(np.uint8)
                view[:] = driver.device_bytes(ptr, view.nbytes)

            driver.enqueue(_stream(stream), ("dtoh", ptr), action)

        def _stream(value: FakeStream | None) -> FakeStream:
            if value is None:
                raise LogicError("the backend must pass its own stream, not the default one")
            return value

        mod.init = init  # type: ignore[attr-defined]
        mod.Device = device  # type: ignore[attr-defined]
        mod.pagelocked_empty = pagelocked_empty  # type: ignore[attr-defined]
        mod.mem_alloc = mem_alloc  # type: ignore[attr-defined]
        mod.Stream = stream  # type: ignore[attr-defined]
        mod.memcpy_htod_async = memcpy_htod_async  # type: ignore[attr-defined]
        mod.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
        return mod

    # --- raw-handle ops for the fake TensorRT engine (cuMemcpyDtoDAsync / cuMemsetD32Async) --
    def dtod(self, dst: int, src: int, nbytes: int, stream_handle: int) -> None:
        def action() -> None:
            self.device_bytes(dst, nbytes)[:] = self.device_bytes(src, nbytes)

        self.enqueue(self.streams[stream_handle], ("kernel_copy", dst, src), action)

    def memset32(self, dst: int, value: int, count: int, stream_handle: int) -> None:
        def action() -> None:
            words = np.full(count, value, dtype=np.uint32)
            self.device_bytes(dst, count * 4)[:] = words.view(np.uint8)

        self.enqueue(self.streams[stream_handle], ("kernel_fill", dst, value), action)


class FakeDevice:
    def __init__(self, driver: FakeDriver, index: int) -> None:
        self._driver = driver
        self.index = index

    def name(self) -> str:
        return self._driver.gpu_name

    def compute_capability(self) -> tuple[int, int]:
        return self._driver.capability

    def make_context(self, flags: int = 0) -> FakeContext:
        ctx = FakeContext(self._driver)
        self._driver.contexts.append(ctx)
        self._driver.stack().append(ctx)
        return ctx


class FakeContext:
    def __init__(self, driver: FakeDriver) -> None:
        self._driver = driver
        self.detached = False
        self.pushes = 0

    def push(self) -> None:
        if self.detached:
            raise LogicError("push of a detached context")
        self.pushes += 1
        self._driver.stack().append(self)

    def pop(self) -> None:
        stack = self._driver.stack()
        if not stack:
            raise LogicError("cuCtxPopCurrent failed: no context on this thread's stack")
        stack.pop()

    def detach(self) -> None:
        if self in self._driver.stack():
            raise LogicError("detach of a context still current on this thread")
        self.detached = True


class FakeAllocation:
    def __init__(self, driver: FakeDriver, ptr: int) -> None:
        self._driver = driver
        self.ptr = ptr

    def __int__(self) -> int:
        return self.ptr

    def free(self) -> None:
        self._driver.require_context("free")
        if self.ptr not in self._driver.memory:
            raise LogicError("double free")
        del self._driver.memory[self.ptr]
        self._driver.freed.append(self.ptr)


class FakeStream:
    def __init__(self, driver: FakeDriver, handle: int) -> None:
        self._driver = driver
        self.handle = handle
        self.pending: list[Callable[[], None]] = []

    def synchronize(self) -> None:
        self._driver.require_context("Stream.synchronize")
        self._driver.ops.append(("sync",))
        while self.pending:
            self.pending.pop(0)()


def install_stack(
    monkeypatch: pytest.MonkeyPatch, tensorrt: types.ModuleType, driver: FakeDriver
) -> None:
    """Make ``tensorrt`` and ``driver`` the importable ``tensorrt`` and ``pycuda.driver``."""
    pycuda = types.ModuleType("pycuda")
    driver_mod = driver.module()
    pycuda.driver = driver_mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver_mod)

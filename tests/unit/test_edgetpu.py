"""EdgeTPU delegate loading: every way it fails is one clear BackendUnavailableError.

This machine has no libedgetpu and no Coral, so the failure paths run for real
against the real dynamic linker and the real LiteRT ``load_delegate``.
"""

from __future__ import annotations

import ctypes.util
import sys
import types

import pytest

from agent.errors import BackendUnavailableError
from agent.inference.backends.edgetpu import check_delegate_library, load_edgetpu_delegate


def test_missing_library_names_the_library_and_the_fix(log_events) -> None:
    with pytest.raises(BackendUnavailableError, match="libedgetpu1-std") as info:
        load_edgetpu_delegate("libedgetpu.so.1")
    assert info.value.backend == "tflite"
    assert info.value.data["cause"] == "library"
    assert info.value.data["library"] == "libedgetpu.so.1"


def test_a_library_that_is_not_a_delegate_is_refused_before_litert_touches_it() -> None:
    libm = ctypes.util.find_library("m")
    assert libm is not None
    with pytest.raises(BackendUnavailableError, match="not a TFLite delegate") as info:
        load_edgetpu_delegate(libm)
    assert info.value.data["cause"] == "not_a_delegate"
    with pytest.raises(BackendUnavailableError, match="tflite_plugin_create_delegate"):
        check_delegate_library(libm)


def test_no_tflite_runtime_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(BackendUnavailableError, match="no TFLite runtime") as info:
        load_edgetpu_delegate("libedgetpu.so.1")
    assert info.value.data["cause"] == "runtime"
    assert "ai_edge_litert.interpreter" in info.value.message
    assert "tflite_runtime.interpreter" in info.value.message


def test_falls_back_to_tflite_runtime_and_reports_a_missing_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tflite-runtime needs numpy<2 and cannot be installed beside LiteRT here; a module with
    # its load_delegate signature stands in, failing the way libedgetpu does without a Coral.
    calls: list[tuple[str, dict[str, str]]] = []

    def load_delegate(library: str, options: dict[str, str] | None = None) -> object:
        calls.append((library, dict(options or {})))
        raise ValueError("Failed to load delegate from libedgetpu.so.1\n")

    legacy = types.ModuleType("tflite_runtime.interpreter")
    legacy.load_delegate = load_delegate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", legacy)
    # libedgetpu is not installed here, so the dynamic-linker check is skipped for this case.
    monkeypatch.setattr(
        "agent.inference.backends.edgetpu.check_delegate_library", lambda library: None
    )
    with pytest.raises(BackendUnavailableError, match="no usable device 'usb'") as info:
        load_edgetpu_delegate("libedgetpu.so.1", device="usb")
    assert info.value.data["cause"] == "device"
    assert calls == [("libedgetpu.so.1", {"device": "usb"})]

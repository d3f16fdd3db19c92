"""EdgeTPU (Coral) delegate for the tflite backend.

``load_edgetpu_delegate`` is called lazily by the tflite backend when
``options.edgetpu`` is true. Each way it can fail becomes one clear
``BackendUnavailableError`` with a ``cause`` of ``runtime``, ``library``,
``not_a_delegate`` or ``device`` and a hint, instead of the runtime's bare
``OSError``/``ValueError`` (and the noisy finaliser errors LiteRT's ``Delegate``
prints when its library never loaded).
"""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Callable
from typing import Any

from agent.errors import BackendUnavailableError
from agent.log import get_logger

log = get_logger(__name__)

DELEGATE_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _load_delegate_function() -> tuple[str, Callable[..., Any]]:
    errors = []
    for module_name in INTERPRETER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        return module_name, module.load_delegate
    raise BackendUnavailableError(
        "no TFLite runtime to load the EdgeTPU delegate: " + "; ".join(errors),
        backend="tflite",
        cause="runtime",
    )


def check_delegate_library(library: str) -> None:
    """Load ``library`` with the dynamic linker and check it exports the delegate plugin API."""
    try:
        handle = ctypes.CDLL(library)
    except OSError as exc:
        raise BackendUnavailableError(
            f"EdgeTPU library {library} cannot be loaded ({exc}); install libedgetpu1-std "
            "from the Coral apt repository",
            backend="tflite",
            cause="library",
            library=library,
        ) from exc
    missing = [symbol for symbol in DELEGATE_SYMBOLS if not hasattr(handle, symbol)]
    if missing:
        raise BackendUnavailableError(
            f"{library} is not a TFLite delegate library (missing {', '.join(missing)})",
            backend="tflite",
            cause="not_a_delegate",
            library=library,
        )


def load_edgetpu_delegate(library: str = "libedgetpu.so.1", device: str = "") -> object:
    """The loaded EdgeTPU delegate, to pass in ``experimental_delegates``.

    ``device`` is libedgetpu's selector ("usb", "pci", "usb:0"); empty takes the first found.
    """
    runtime, load_delegate = _load_delegate_function()
    check_delegate_library(library)
    options = {"device": device} if device else {}
    try:
        delegate = load_delegate(library, options)
    except (ValueError, RuntimeError) as exc:
        # libedgetpu loads without hardware and only fails here, with an empty or terse message.
        which = f" {device!r}" if device else ""
        detail = str(exc).strip() or "no detail"
        raise BackendUnavailableError(
            f"EdgeTPU delegate from {library} found no usable device{which} ({detail}); "
            "check that the Coral is plugged in (lsusb shows 1a6e:089a or 18d1:9302) "
            "or /dev/apex_0 exists, and that the agent's user is in the plugdev/apex group",
            backend="tflite",
            cause="device",
            library=library,
            device=device,
        ) from exc
    log.info("edgetpu_delegate_loaded", library=library, device=device or "auto", runtime=runtime)
    return delegate

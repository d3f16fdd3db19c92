"""What a model file says about itself: backend (magic bytes), normalisation, labels, size.

Read without any inference runtime, so ``model inspect`` and the loader see the
same facts:

* TFLite: the flatbuffer identifier ``TFL3`` at bytes 4..8; the ``TFLITE_METADATA``
  buffer (MediaPipe/TFLite Support metadata) for the input's ``NormalizationOptions``
  (mean/std in pixel units); label files packed into the model as a zip archive
  (how TFLite Support attaches associated files);
* ONNX: a protobuf ``ModelProto`` (field 1, ``ir_version``, first); ``metadata_props``
  (read by the backend) for labels (``names`` as written by Ultralytics exports,
  ``labels`` or ``character``), ``imgsz`` and ``mean``/``std``;
* TensorRT: a serialized plan starts with ``ftrt``; otherwise (an engine wrapped
  with a metadata header, as Ultralytics writes them) the ``.engine``/``.plan`` suffix.
"""

from __future__ import annotations

import ast
import json
import re
import struct
import zipfile
from pathlib import Path

from agent.inference.adapt import ModelHints
from agent.inference.base import Backend

TFLITE_ID = b"TFL3"
TRT_PLAN_TAG = b"ftrt"
METADATA_NAME = b"TFLITE_METADATA"
NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union tag in metadata_schema.fbs
ONNX_IR_VERSION_TAG = 0x08  # field 1, varint
MAX_IR_VERSION = 64
_LABEL_SPLIT = re.compile(r"[\r\n]+")


def sniff_backend(head: bytes, suffix: str = "") -> str | None:
    """Backend from a file's first 16 bytes, else from its suffix; None: not a model."""
    if head[4:8] == TFLITE_ID:
        return "tflite"
    if head[:4] == TRT_PLAN_TAG:
        return "tensorrt"
    if len(head) > 1 and head[0] == ONNX_IR_VERSION_TAG and 0 < head[1] < MAX_IR_VERSION:
        return "onnx"
    return {".tflite": "tflite", ".onnx": "onnx", ".engine": "tensorrt", ".plan": "tensorrt"}.get(
        suffix.lower()
    )


def backend_of(path: Path) -> str | None:
    """``sniff_backend`` on the file (None when it cannot be read or is not a model)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    return sniff_backend(head, path.suffix)


# --- a minimal flatbuffer reader (tables, vectors, strings; little-endian) -----------------


class _Table:
    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self._vt = vtable
        self._vt_len = struct.unpack_from("<H", buf, vtable)[0]

    def _field(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot >= self._vt_len:
            return 0
        offset: int = struct.unpack_from("<H", self.buf, self._vt + slot)[0]
        return self.pos + offset if offset else 0

    def _deref(self, at: int) -> int:
        return at + int(struct.unpack_from("<I", self.buf, at)[0])

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        at = self._field(index)
        return int(struct.unpack_from(fmt, self.buf, at)[0]) if at else default

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        return _Table(self.buf, self._deref(at)) if at else None

    def _vector(self, index: int) -> tuple[int, int]:
        at = self._field(index)
        if not at:
            return 0, 0
        start = self._deref(at)
        return start + 4, int(struct.unpack_from("<I", self.buf, start)[0])

    def string(self, index: int) -> bytes:
        start, length = self._vector(index)
        return self.buf[start : start + length]

    def bytes_vector(self, index: int) -> bytes:
        return self.string(index)

    def floats(self, index: int) -> tuple[float, ...]:
        start, length = self._vector(index)
        return tuple(struct.unpack_from(f"<{length}f", self.buf, start)) if length else ()

    def tables(self, index: int) -> list[_Table]:
        start, length = self._vector(index)
        return [_Table(self.buf, self._deref(start + 4 * i)) for i in range(length)]


def _root(buf: bytes) -> _Table:
    return _Table(buf, int(struct.unpack_from("<I", buf, 0)[0]))


def _tflite_metadata(buf: bytes) -> bytes:
    """The TFLITE_METADATA buffer of a TFLite model, or b"" (Model: 4 buffers, 6 metadata)."""
    model = _root(buf)
    for entry in model.tables(6):
        if entry.string(0) == METADATA_NAME:
            buffers = model.tables(4)
            index = entry.scalar(1, "<I")
            if index < len(buffers):
                return buffers[index].bytes_vector(0)
    return b""


def _normalisation(meta: bytes) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of the first input's NormalizationOptions in ModelMetadata, or empty tuples.

    ModelMetadata.subgraph_metadata (3) → SubGraphMetadata.input_tensor_metadata (2)
    → TensorMetadata.process_units (4) → ProcessUnit (options_type 0, options 1).
    """
    for subgraph in _root(meta).tables(3):
        for tensor in subgraph.tables(2)[:1]:
            for unit in tensor.tables(4):
                options = unit.table(1)
                if unit.scalar(0, "<B") == NORMALIZATION_OPTIONS and options is not None:
                    return options.floats(0), options.floats(1)
    return (), ()


def _zip_labels(path: Path) -> tuple[dict[int, str], str]:
    """Labels from a text file packed into the model (TFLite Support associated files)."""
    if not zipfile.is_zipfile(path):
        return {}, ""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.lower().endswith(".txt")]
        names.sort(key=lambda n: ("label" not in n.lower(), n))
        if not names:
            return {}, ""
        text = archive.read(names[0]).decode("utf-8", errors="replace")
    lines = [ln.strip() for ln in text.splitlines()]
    return {i: ln for i, ln in enumerate(lines) if ln}, f"packed file {names[0]}"


def tflite_hints(path: Path) -> ModelHints:
    try:
        buf = path.read_bytes()
    except OSError:
        return ModelHints()
    found: dict[str, str] = {}
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    try:
        meta = _tflite_metadata(buf)
        if meta:
            mean, std = _normalisation(meta)
            found["TFLITE_METADATA"] = f"{len(meta)} bytes"
    except (struct.error, IndexError):
        meta = b""  # a file the runtime will refuse anyway; no hints from it
    if mean and std:
        found["normalization"] = f"mean={list(mean)} std={list(std)}"
    labels, source = _zip_labels(path)
    if labels:
        found["labels"] = f"{len(labels)} from {source}"
    return ModelHints(mean=mean, std=std, labels=labels, labels_source=source, metadata=found)


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = json.loads(text)
    except ValueError:
        values = [v for v in re.split(r"[,\s]+", text.strip("[]() ")) if v]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return ()


def _labels_from(props: dict[str, str]) -> tuple[dict[int, str], str]:
    if "names" in props:
        try:
            names = ast.literal_eval(props["names"])  # Ultralytics writes a dict literal
        except (ValueError, SyntaxError):
            names = None
        if isinstance(names, dict):
            return {int(k): str(v) for k, v in names.items()}, "metadata_props names"
        if isinstance(names, list):
            return dict(enumerate(str(v) for v in names)), "metadata_props names"
    for key in ("labels", "character"):
        if key in props:
            lines = [ln.strip() for ln in _LABEL_SPLIT.split(props[key])]
            return dict(enumerate(ln for ln in lines if ln)), f"metadata_props {key}"
    return {}, ""


def onnx_hints(props: dict[str, str]) -> ModelHints:
    """Hints from an ONNX model's ``metadata_props`` (as onnxruntime reports them)."""
    labels, source = _labels_from(props)
    size = _floats(props.get("imgsz", ""))
    input_size = None
    if len(size) == 2 and min(size) > 0:
        input_size = (int(size[1]), int(size[0]))
    elif len(size) == 1 and size[0] > 0:
        input_size = (int(size[0]), int(size[0]))
    mean, std = _floats(props.get("mean", "")), _floats(props.get("std", ""))
    if not (mean and std) and props.get("author", "").startswith("Ultralytics"):
        # Ultralytics exports do not write it, but every one of them takes 0..1 RGB.
        mean, std = (0.0,), (255.0,)
    if mean and std and max(mean + std) <= 1.0:
        # Figures on the 0..1 scale (the PyTorch habit): hints are in pixel units.
        mean, std = tuple(v * 255.0 for v in mean), tuple(v * 255.0 for v in std)
    if not (mean and std):
        mean, std = (), ()
    return ModelHints(
        mean=mean,
        std=std,
        labels=labels,
        labels_source=source,
        input_size=input_size,
        metadata=dict(props),
    )


def model_hints(backend_name: str, path: Path, backend: Backend) -> ModelHints:
    """What the file says about itself: TFLite metadata and packed labels, ONNX metadata_props."""
    if backend_name == "tflite":
        return tflite_hints(path)
    if backend_name == "onnx":
        return onnx_hints(getattr(backend, "metadata", {}))
    return ModelHints()

"""Shape helpers shared by the backends that read shapes from a model file (ONNX, TensorRT)."""

from __future__ import annotations

from collections.abc import Sequence

from agent.inference.base import Layout

# Used for a dynamic spatial size when the options give none (YOLO-style exports).
DEFAULT_DYNAMIC_HW = (640, 640)


def guess_layout(shape: Sequence[int | None]) -> Layout:
    """NCHW when dim 1 looks like channels (1 or 3) and the last dim does not; else NHWC."""
    if len(shape) != 4:
        return "nhwc"
    channels_first = shape[1] in (1, 3, 4)
    channels_last = shape[3] in (1, 3, 4)
    return "nchw" if channels_first and not channels_last else "nhwc"


def resolve_input_shape(
    shape: Sequence[int | None],
    layout: Layout,
    input_size: tuple[int, int] | None,
) -> tuple[int, ...]:
    """Fill dynamic dims (None or <= 0): batch → 1, height/width → ``input_size`` or the default.

    A fixed dim is kept even when ``input_size`` disagrees: the model decides.
    """
    height, width = input_size or DEFAULT_DYNAMIC_HW
    h_axis, w_axis = (2, 3) if layout == "nchw" else (1, 2)
    resolved: list[int] = []
    for axis, dim in enumerate(shape):
        if dim is not None and dim > 0:
            resolved.append(int(dim))
        elif axis == 0:
            resolved.append(1)
        elif len(shape) == 4 and axis == h_axis:
            resolved.append(height)
        elif len(shape) == 4 and axis == w_axis:
            resolved.append(width)
        else:
            resolved.append(3 if len(shape) == 4 else 1)
    return tuple(resolved)


def is_dynamic(shape: Sequence[int | None]) -> bool:
    return any(dim is None or dim <= 0 for dim in shape)

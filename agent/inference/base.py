"""What every inference backend provides, and what the pipeline hands it.

A backend only loads a model and runs it on an already prepared input tensor.
Input adaptation (resize, colour, normalisation) and decoding of outputs live in
the pipeline, so every backend gets them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Layout = Literal["nhwc", "nchw"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    # Affine quantisation (real = scale * (q - zero_point)); scale 0 means not quantised.
    scale: float = 0.0
    zero_point: int = 0


@dataclass(frozen=True, slots=True)
class InputSpec:
    """The single image input of a vision model."""

    tensor: TensorSpec
    layout: Layout

    @property
    def height(self) -> int:
        return self.tensor.shape[1] if self.layout == "nhwc" else self.tensor.shape[2]

    @property
    def width(self) -> int:
        return self.tensor.shape[2] if self.layout == "nhwc" else self.tensor.shape[3]


@dataclass(frozen=True, slots=True)
class RuntimeInfo:
    name: str  # e.g. "ai-edge-litert", "tflite-runtime", "tensorrt", "onnxruntime"
    version: str
    device: str = "cpu"  # "cpu", "cuda:0 (Orin)", "edgetpu:usb"
    extra: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """A loaded model. One instance is used by one thread at a time."""

    @property
    def input_spec(self) -> InputSpec: ...

    @property
    def output_specs(self) -> list[TensorSpec]: ...

    @property
    def runtime(self) -> RuntimeInfo: ...

    def input_buffer(self) -> npt.NDArray[np.generic]:
        """A preallocated array of the input's shape and dtype to preprocess into.

        The pipeline writes the frame into it, then calls ``infer`` with it; backends
        with pinned or device-mapped memory hand out that memory here.
        """
        ...

    def infer(self, tensor: npt.NDArray[np.generic]) -> list[npt.NDArray[np.generic]]:
        """Run the model. Returned arrays are owned by the caller (copies, not views)."""
        ...

    def close(self) -> None: ...

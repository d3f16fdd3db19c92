"""A loaded model slot: backend, preprocessor and decoder built and checked together."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import DecoderError, InferenceError, ModelLoadError
from agent.inference.base import Backend
from agent.inference.decoders import Decoder, make_decoder
from agent.inference.preprocess import Preprocessor
from agent.inference.registry import BackendOptions, create_backend

EDGETPU_SUFFIX = "_edgetpu.tflite"  # the name edgetpu_compiler gives its output
GPU_ACCELERATORS = ("nvidia-gpu", "jetson-gpu")


def default_threads(board_threads: int, cores: int | None) -> int:
    """The board's interpreter threads, capped at cores - 1.

    XNNPACK splits an invoke over its threads and waits for the slowest; when capture
    (often decoding on the same cores), preprocessing and post-processing preempt one of
    them the whole invoke stalls, so one core is left for the rest of the pipeline.
    """
    if not cores:
        return board_threads
    return max(1, min(board_threads, cores - 1))


def backend_options(
    config: AgentConfig, model: ModelConfig, path: Path, cores: int | None = None
) -> BackendOptions:
    """The backend options for ``model`` at ``path`` (the pipeline and bench both use it).

    A model's own ``threads`` is used as given; the board default is capped by
    ``default_threads`` (``cores`` defaults to this machine's).
    """
    board = config.board
    backend = config.backend_for(model)
    # Only EdgeTPU-compiled files get the delegate: a CPU model on a Coral board must
    # still load when the accelerator is unplugged.
    edgetpu = (
        board.accelerator == "edgetpu"
        and backend == "tflite"
        and path.name.endswith(EDGETPU_SUFFIX)
    )
    providers = tuple(model.onnx_providers)
    if not providers and board.accelerator in GPU_ACCELERATORS:
        providers = ("auto",)  # GPU providers this onnxruntime build has, CPU last
    width_height = model.input_size
    return BackendOptions(
        threads=model.threads or default_threads(board.inference_threads, cores or os.cpu_count()),
        edgetpu=edgetpu,
        edgetpu_library=board.edgetpu_library,
        providers=providers,
        # Config says [width, height] (as people write sizes); backends take (height, width).
        input_size=(width_height[1], width_height[0]) if width_height else None,
    )


@dataclass(slots=True)
class LoadedModel:
    slot: str
    path: Path
    backend_name: str
    backend: Backend
    preprocessor: Preprocessor
    decoder: Decoder

    def info(self) -> dict[str, object]:
        runtime = self.backend.runtime
        return {
            "path": str(self.path),
            "backend": self.backend_name,
            "runtime": runtime.name,
            "version": runtime.version,
            "device": runtime.device,
            "input_shape": list(self.backend.input_spec.tensor.shape),
        }

    def close(self) -> None:
        self.backend.close()


def _check_image_input(backend: Backend, path: Path) -> None:
    shape = backend.input_spec.tensor.shape
    if len(shape) != 4:
        raise ModelLoadError(f"model input {shape} is not an image batch", model=str(path))


def _installed_engine(path: Path, options: BackendOptions) -> Path:
    # Imported here: the update code stays off the import path of tflite/onnx devices.
    from agent.update.engines.cache import runtime_target  # noqa: PLC0415
    from agent.update.engines.rebuild import resolve_installed_engine  # noqa: PLC0415

    return resolve_installed_engine(path, functools.partial(runtime_target, options.device_index))


def load_model(
    model: ModelConfig, backend_name: str, path: Path, options: BackendOptions, smoke: bool = True
) -> LoadedModel:
    """Load, wire and (with ``smoke``) invoke once.

    Raises ModelLoadError or BackendUnavailableError; nothing stays open on failure.
    A staging-built TensorRT engine that another TensorRT or GPU built loads as its
    rebuild for this device (``agent.update.engines.rebuild``).
    """
    if backend_name == "tensorrt":
        path = _installed_engine(path, options)
    backend = create_backend(backend_name, path, options)
    try:
        _check_image_input(backend, path)
        spec = backend.input_spec
        preprocessor = Preprocessor(spec, model.resize_mode, model.color_order, model.input_range)
        decoder = make_decoder(model, spec, backend.output_specs)
        if smoke:
            backend.infer(backend.input_buffer())
    except (DecoderError, InferenceError) as exc:
        backend.close()
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(
            f"{path.name} does not fit slot {model.slot}: {exc}", model=str(path)
        ) from exc
    except BaseException:
        backend.close()
        raise
    return LoadedModel(model.slot, path, backend_name, backend, preprocessor, decoder)

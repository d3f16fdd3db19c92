"""A loaded model slot: backend, preprocessor and decoder built and checked together."""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import DecoderError, DecoderMismatchError, InferenceError, ModelLoadError
from agent.inference.adapt import InputPlan, ModelHints, plan_input
from agent.inference.base import Backend
from agent.inference.decoders import Decoder, make_decoder
from agent.inference.metadata import backend_of, model_hints
from agent.inference.preprocess import Preprocessor, Transform
from agent.inference.registry import BackendOptions, create_backend
from agent.log import get_logger

log = get_logger(__name__)

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
    plan: InputPlan | None = None
    hints: ModelHints | None = None

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


def resolve_backend(config: AgentConfig, model: ModelConfig, path: Path) -> str:
    """The model's configured backend, else the one its file is (magic bytes), else the board's.

    An ONNX file in a slot without ``backend`` must not go to the board's default
    TFLite runtime ("not a valid Flatbuffer buffer").
    """
    if model.backend is not None:
        return model.backend
    return backend_of(path) or config.backend_for(model)


def _sized_by_metadata(
    model: ModelConfig, backend: Backend, hints: ModelHints, options: BackendOptions
) -> BackendOptions | None:
    """Options that size a dynamic input as the file's metadata says (``imgsz``), if needed."""
    if model.input_size or hints.input_size is None or not getattr(backend, "dynamic_input", 0):
        return None
    width, height = hints.input_size
    spec = backend.input_spec
    if (spec.width, spec.height) == (width, height):
        return None
    return dataclasses.replace(options, input_size=(height, width))


def wire(
    model: ModelConfig, backend: Backend, hints: ModelHints, path: Path
) -> tuple[Preprocessor, Decoder, InputPlan]:
    """Preprocessor and decoder for ``backend``; DecoderMismatchError when it does not fit."""
    spec = backend.input_spec
    plan = plan_input(model, spec, hints)
    affine = (plan.affine.scale, plan.affine.offset) if plan.affine else None
    preprocessor = Preprocessor(
        spec,
        plan.resize_mode,
        plan.color_order,
        "auto",
        channel_affine=affine,
        crop_fraction=plan.crop_fraction,
    )
    decoder = make_decoder(
        model.model_copy(update={"path": str(path)}), spec, backend.output_specs, hints.labels
    )
    return preprocessor, decoder, plan


def smoke_decode(decoder: Decoder, backend: Backend, model: ModelConfig, path: Path) -> None:
    """One invoke on the empty input, decoded: a decoder that chokes on real outputs fails here."""
    outputs = backend.infer(backend.input_buffer())
    spec = backend.input_spec
    identity = Transform(1.0, 0.0, 1.0, 0.0, spec.width, spec.height)
    try:
        decoder(outputs, identity)
    except DecoderError as exc:
        seen = [f"{o.dtype}{list(o.shape)}" for o in outputs]
        raise DecoderMismatchError(
            f"{path.name}: decoder {model.decoder} fails on the model's outputs ({exc}); "
            f"outputs seen: {', '.join(seen)}",
            decoder=model.decoder,
            outputs=seen,
            fits=[],
            model=str(path),
        ) from exc


def load_model(
    model: ModelConfig, backend_name: str, path: Path, options: BackendOptions, smoke: bool = True
) -> LoadedModel:
    """Load, wire and (with ``smoke``) invoke and decode once.

    Raises ModelLoadError (``DecoderMismatchError`` when the outputs do not fit the
    decoder) or BackendUnavailableError; nothing stays open on failure.
    A staging-built TensorRT engine that another TensorRT or GPU built loads as its
    rebuild for this device (``agent.update.engines.rebuild``).
    """
    if backend_name == "tensorrt":
        path = _installed_engine(path, options)
    backend = create_backend(backend_name, path, options)
    try:
        _check_image_input(backend, path)
        hints = model_hints(backend_name, path, backend)
        resized = _sized_by_metadata(model, backend, hints, options)
        if resized is not None:
            backend.close()
            backend = create_backend(backend_name, path, resized)
        preprocessor, decoder, plan = wire(model, backend, hints, path)
        log.info(
            "model_input_plan",
            slot=model.slot,
            model=path.name,
            resize_mode=plan.resize_mode,
            color_order=plan.color_order,
            normalisation=plan.affine.value_range() if plan.affine else "raw",
            sources=plan.sources,
            metadata=sorted(hints.metadata),
            labels=hints.labels_source or None,
            input_size=list(backend.input_spec.tensor.shape),
        )
        if smoke:
            smoke_decode(decoder, backend, model, path)
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
    return LoadedModel(
        model.slot, path, backend_name, backend, preprocessor, decoder, plan=plan, hints=hints
    )

"""Fit a BGR frame to the model input, once per frame, into a preallocated tensor.

Resize (squash, letterbox or centre crop) at model size first, then colour order and
normalisation are applied while writing into the backend's input buffer, so the only
full-resolution work is one resize. Each call returns the ``Transform`` that maps
model-input coordinates back to frame pixels, so decoders never see the resize mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from agent.inference.base import InputSpec

ResizeMode = Literal["squash", "letterbox", "crop"]
ColorOrder = Literal["rgb", "bgr"]
InputRange = Literal["auto", "0_255", "0_1", "-1_1"]

# (scale, offset) with real value = pixel * scale + offset
_FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "0_255": (1.0, 0.0),
    "0_1": (1.0 / 255.0, 0.0),
    "-1_1": (2.0 / 255.0, -1.0),
}


@dataclass(frozen=True, slots=True)
class Transform:
    """frame_x = norm_x * ax + bx, frame_y = norm_y * ay + by (norm = 0..1 of the model input)."""

    ax: float
    bx: float
    ay: float
    by: float
    frame_w: int
    frame_h: int

    def box_to_frame(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """One normalised x1, y1, x2, y2 box → frame pixels, clipped (plain floats, no numpy)."""
        w, h = float(self.frame_w), float(self.frame_h)
        return (
            min(max(box[0] * self.ax + self.bx, 0.0), w),
            min(max(box[1] * self.ay + self.by, 0.0), h),
            min(max(box[2] * self.ax + self.bx, 0.0), w),
            min(max(box[3] * self.ay + self.by, 0.0), h),
        )

    def boxes_to_frame(self, boxes: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """[N, 4] normalised x1, y1, x2, y2 → frame pixels, clipped to the frame."""
        out = np.empty(boxes.shape, np.float64)
        out[:, 0::2] = boxes[:, 0::2] * self.ax + self.bx
        out[:, 1::2] = boxes[:, 1::2] * self.ay + self.by
        np.clip(out[:, 0::2], 0.0, float(self.frame_w), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(self.frame_h), out=out[:, 1::2])
        return out


@dataclass(frozen=True, slots=True)
class _Plan:
    transform: Transform
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 of the frame region used
    size: tuple[int, int]  # resized width, height
    offset: tuple[int, int]  # where the resized image lands in the input (letterbox pad)


def plan_fit(
    frame_w: int,
    frame_h: int,
    in_w: int,
    in_h: int,
    mode: ResizeMode,
    *,
    crop_fraction: float = 1.0,
) -> tuple[Transform, tuple[int, int, int, int], tuple[int, int], tuple[int, int]]:
    """Pure geometry of one resize mode: transform, frame crop, resized size, paste offset.

    ``crop_fraction`` (crop mode) keeps that central part of the largest crop of the
    input's aspect: 0.875 is the "resize to 256, centre-crop 224" of ImageNet models.
    """
    if mode == "squash":
        return (
            Transform(float(frame_w), 0.0, float(frame_h), 0.0, frame_w, frame_h),
            (0, 0, frame_w, frame_h),
            (in_w, in_h),
            (0, 0),
        )
    if mode == "letterbox":
        scale = min(in_w / frame_w, in_h / frame_h)
        new_w, new_h = max(1, round(frame_w * scale)), max(1, round(frame_h * scale))
        pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
        sx, sy = new_w / frame_w, new_h / frame_h
        transform = Transform(in_w / sx, -pad_x / sx, in_h / sy, -pad_y / sy, frame_w, frame_h)
        return transform, (0, 0, frame_w, frame_h), (new_w, new_h), (pad_x, pad_y)
    scale = max(in_w / frame_w, in_h / frame_h) / crop_fraction
    # At least one pixel: an input far narrower than the frame's aspect would round to zero.
    crop_w = max(1, min(frame_w, round(in_w / scale)))
    crop_h = max(1, min(frame_h, round(in_h / scale)))
    x0, y0 = (frame_w - crop_w) // 2, (frame_h - crop_h) // 2
    transform = Transform(float(crop_w), float(x0), float(crop_h), float(y0), frame_w, frame_h)
    return transform, (x0, y0, x0 + crop_w, y0 + crop_h), (in_w, in_h), (0, 0)


def normalisation(dtype: np.dtype[np.generic], input_range: InputRange) -> tuple[float, float]:
    """(scale, offset) applied to 0..255 pixels for this input dtype and range."""
    if dtype == np.uint8:
        return 1.0, 0.0
    if dtype == np.int8:
        return 1.0, -128.0
    return _FLOAT_RANGES["-1_1" if input_range == "auto" else input_range]


def requantise(
    scale: npt.NDArray[np.float32], offset: npt.NDArray[np.float32], q_scale: float, zero_point: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-channel pixel → real affine folded into pixel → quantised (q = real / s + zp)."""
    return scale / q_scale, offset / q_scale + zero_point


Region = tuple[slice, slice]
# Buffers remembered per preprocessor: a pipeline prepares into three (handoff.py); more
# means callers that come and go, whose buffers need not be kept alive.
_WRITTEN_BUFFERS = 8


@dataclass(frozen=True, slots=True)
class _FloatFit:
    """What the direct float path reuses for one resized size: buffer, slices, pad blocks."""

    size: tuple[int, int]  # resized width, height
    resized: npt.NDArray[np.uint8]  # the frame at model size (colour swapped in place)
    inner: Region  # where it goes in the input (HxWxC)
    pads: tuple[tuple[Region, npt.NDArray[np.float32]], ...]  # letterbox bands, filled

    @staticmethod
    def make(plan: _Plan, in_w: int, in_h: int, pad: npt.NDArray[np.float32]) -> _FloatFit:
        w, h = plan.size
        px, py = plan.offset
        bands: list[Region] = []
        if h < in_h:
            bands += [(slice(0, py), slice(0, in_w)), (slice(py + h, in_h), slice(0, in_w))]
        if w < in_w:
            bands += [(slice(py, py + h), slice(0, px)), (slice(py, py + h), slice(px + w, in_w))]
        pads = []
        for rows, cols in bands:
            shape = (rows.stop - rows.start, cols.stop - cols.start, 3)
            if shape[0] > 0 and shape[1] > 0:
                pads.append(((rows, cols), np.ascontiguousarray(np.broadcast_to(pad, shape))))
        return _FloatFit(
            size=(w, h),
            resized=np.empty((h, w, 3), np.uint8),
            inner=(slice(py, py + h), slice(px, px + w)),
            pads=tuple(pads),
        )


@dataclass(frozen=True, slots=True)
class _Written:
    """A caller's float32 NHWC buffer as the direct path last wrote it, for one frame shape.

    The pipeline prepares every frame into one of the same few buffers, each written by
    this preprocessor alone: views made once, and the letterbox pad, which no frame
    changes, filled once instead of per frame.
    """

    out: npt.NDArray[np.generic]  # held, so its id() cannot be reused while it is a key
    shape: tuple[int, ...]  # the frame shape these views were made for
    transform: Transform
    region: Region | None  # the frame region used (crop mode), None for the whole frame
    fit: _FloatFit
    inner: npt.NDArray[np.float32]  # where the resized frame goes in ``out``


class Preprocessor:
    def __init__(
        self,
        spec: InputSpec,
        resize_mode: ResizeMode = "squash",
        color_order: ColorOrder = "rgb",
        input_range: InputRange = "auto",
        *,
        channel_affine: tuple[Sequence[float], Sequence[float]] | None = None,
        crop_fraction: float = 1.0,
    ) -> None:
        """``channel_affine`` (per-channel scale, offset on 0..255 pixels) overrides the range.

        For a quantised integer input it is folded into the quantisation, so the tensor
        gets ``round(real / scale + zero_point)``.
        """
        self._spec = spec
        self._mode = resize_mode
        self._crop_fraction = crop_fraction
        self._rgb = color_order == "rgb"
        self._scale, self._offset = normalisation(spec.tensor.dtype, input_range)
        self._channels: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None
        if channel_affine is not None:
            scale = np.asarray(channel_affine[0], np.float32)
            offset = np.asarray(channel_affine[1], np.float32)
            tensor = spec.tensor
            if np.issubdtype(tensor.dtype, np.integer) and tensor.scale:
                scale, offset = requantise(scale, offset, tensor.scale, tensor.zero_point)
            self._channels = (scale, offset)
        self._in_w, self._in_h = spec.width, spec.height
        self._canvas = np.zeros((self._in_h, self._in_w, 3), np.uint8)
        self._rgb_buffer = np.zeros_like(self._canvas)
        self._plans: dict[tuple[int, int], _Plan] = {}
        self._last_plan: _Plan | None = None
        self._int8 = spec.tensor.dtype == np.int8
        self._lut = self._float_table()
        # Float path: the value of a black pixel (the letterbox pad) and, where every
        # channel shares one affine, that affine (one cv2.addWeighted pass instead of the table).
        self._pad = np.zeros(3, np.float32) if self._lut is None else self._lut[0, 0].copy()
        self._uniform = self._uniform_affine()
        self._fits: dict[tuple[int, int], _FloatFit] = {}
        self._written: dict[int, _Written] = {}  # by id() of the caller's buffer

    def _float_table(self) -> npt.NDArray[np.float32] | None:
        """Pixel value -> tensor value for a float32 NHWC input, per channel (1x256x3).

        ``cv2.LUT`` then writes the tensor in one pass: about 5x less CPU than widen,
        multiply and add on a 128x128 input, and the very float32 values of those steps.
        """
        if self._spec.tensor.dtype != np.float32 or self._spec.layout != "nhwc":
            return None
        values = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)
        if self._channels is not None:
            scale, offset = self._channels
            table = values * scale + offset
        else:
            table = values
            if self._scale != 1.0:
                table = table * np.float32(self._scale)
            if self._offset:
                table = table + np.float32(self._offset)
        return np.ascontiguousarray(table, dtype=np.float32).reshape(1, 256, 3)

    def _uniform_affine(self) -> tuple[float, float] | None:
        if self._lut is None:
            return None
        if self._channels is None:
            return self._scale, self._offset
        scale, offset = self._channels
        if np.all(scale == scale[0]) and np.all(offset == offset[0]):
            return float(scale[0]), float(offset[0])
        return None

    def _plan(self, frame_w: int, frame_h: int) -> _Plan:
        plan = self._plans.get((frame_w, frame_h))
        if plan is None:
            plan = _Plan(
                *plan_fit(
                    frame_w,
                    frame_h,
                    self._in_w,
                    self._in_h,
                    self._mode,
                    crop_fraction=self._crop_fraction,
                )
            )
            self._plans[(frame_w, frame_h)] = plan
        return plan

    def prepare(self, image: npt.NDArray[np.uint8], out: npt.NDArray[np.generic]) -> Transform:
        """Write ``image`` (BGR HxWx3) into ``out`` (the input tensor) and return the transform.

        ``out`` is written by this preprocessor alone between calls: a letterbox pad the
        direct float path wrote into it before is not written again.
        """
        written = self._written.get(id(out))
        if written is not None and written.out is out and written.shape == image.shape:
            region = image if written.region is None else image[written.region]
            self._convert(region, written.fit, written.inner)
            return written.transform
        frame_h, frame_w = image.shape[:2]
        plan = self._plan(frame_w, frame_h)
        x0, y0, x1, y1 = plan.crop
        crop = None if plan.crop == (0, 0, frame_w, frame_h) else (slice(y0, y1), slice(x0, x1))
        region = image if crop is None else image[crop]
        target = out[0] if self._spec.layout == "nhwc" else out[0].transpose(1, 2, 0)
        if self._lut is not None and target.flags.c_contiguous:
            # A float32 NHWC input (that is when there is a table), written in place.
            fit = self._prepare_float(region, plan, cast("npt.NDArray[np.float32]", target))
            if len(self._written) >= _WRITTEN_BUFFERS:
                self._written.clear()  # buffers of a pipeline that is gone: forget them
            self._written[id(out)] = _Written(
                out, image.shape, plan.transform, crop, fit, target[fit.inner]
            )
            return plan.transform
        if plan.offset == (0, 0):
            cv2.resize(region, plan.size, dst=self._canvas, interpolation=cv2.INTER_LINEAR)
        else:
            # Letterbox: the pad stays black; only the inner rectangle is rewritten per frame.
            if plan is not self._last_plan:
                self._canvas.fill(0)
            px, py = plan.offset
            w, h = plan.size
            self._canvas[py : py + h, px : px + w] = cv2.resize(
                region, plan.size, interpolation=cv2.INTER_LINEAR
            )
        self._last_plan = plan
        if self._rgb:
            # cv2's SIMD swap into a contiguous buffer beats numpy on a reversed-stride view.
            pixels = cv2.cvtColor(self._canvas, cv2.COLOR_BGR2RGB, dst=self._rgb_buffer)
        else:
            pixels = self._canvas
        if self._channels is not None:
            self._write_affine(pixels, target, *self._channels)
            return plan.transform
        if self._int8:
            np.subtract(pixels, 128, out=target, dtype=np.int16, casting="unsafe")
            return plan.transform
        # Widen, then scale and shift in place: three contiguous passes, no temporaries.
        np.copyto(target, pixels, casting="unsafe")
        if self._scale != 1.0:
            np.multiply(target, self._scale, out=target, casting="unsafe")
        if self._offset:
            np.add(target, self._offset, out=target, casting="unsafe")
        return plan.transform

    def _prepare_float(
        self, region: npt.NDArray[np.uint8], plan: _Plan, target: npt.NDArray[np.float32]
    ) -> _FloatFit:
        """Float32 NHWC: resize, colour order and normalisation straight into the tensor.

        Only the resized rectangle is converted (a letterbox pad gets the value of a black
        pixel, copied from a block made once per frame size), with no canvas in between:
        about half the CPU of converting the whole padded input.
        """
        fit = self._fits.get(plan.size)
        if fit is None:
            fit = self._fits[plan.size] = _FloatFit.make(plan, self._in_w, self._in_h, self._pad)
        self._convert(region, fit, target[fit.inner])
        for where, block in fit.pads:
            # A same-shape copy: broadcasting the 3-value pad into the slice is ~10x slower.
            target[where] = block
        return fit

    def _convert(
        self, region: npt.NDArray[np.uint8], fit: _FloatFit, inner: npt.NDArray[np.float32]
    ) -> None:
        """The frame region resized into ``fit``, then colour order and affine into ``inner``.

        One ``cv2.addWeighted`` pass scales and shifts where every channel shares one
        affine; a per-channel one goes through the table.
        """
        pixels = cv2.resize(region, fit.size, dst=fit.resized, interpolation=cv2.INTER_LINEAR)
        if self._rgb:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, dst=fit.resized)
        if self._uniform is not None:
            scale, offset = self._uniform
            written = cv2.addWeighted(
                pixels, scale, pixels, 0.0, offset, dst=inner, dtype=cv2.CV_32F
            )
        else:
            written = cv2.LUT(pixels, cast("npt.NDArray[np.float32]", self._lut), dst=inner)
        if written is not inner:  # cv2 could not take the view as its destination
            np.copyto(inner, written)

    def _write_affine(
        self,
        pixels: npt.NDArray[np.generic],
        target: npt.NDArray[np.generic],
        scale: npt.NDArray[np.float32],
        offset: npt.NDArray[np.float32],
    ) -> None:
        dtype = self._spec.tensor.dtype
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)  # type: ignore[type-var]  # narrowed by issubdtype above
            values = np.rint(pixels.astype(np.float32) * scale + offset)
            np.copyto(target, np.clip(values, info.min, info.max), casting="unsafe")
            return
        # Float input: widen in place, then one broadcast multiply and add per channel.
        np.copyto(target, pixels, casting="unsafe")
        np.multiply(target, scale, out=target, casting="unsafe")
        np.add(target, offset, out=target, casting="unsafe")

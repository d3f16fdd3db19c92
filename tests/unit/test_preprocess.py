"""Resize modes, colour order, normalisation and the transform back to frame pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.inference.base import InputSpec, TensorSpec
from agent.inference.preprocess import Preprocessor, normalisation, plan_fit


def _spec(shape, dtype=np.float32, layout="nhwc"):
    return InputSpec(TensorSpec("input", shape, np.dtype(dtype)), layout)


def _frame_with_patch(w, h, box):
    frame = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = (255, 0, 0)  # pure blue in BGR
    return frame


def _patch_in_tensor(plane):
    ys, xs = np.nonzero(plane > plane.min() + (plane.max() - plane.min()) / 2)
    h, w = plane.shape
    return np.array([[xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]])


@pytest.mark.parametrize("mode", ["squash", "letterbox", "crop"])
@pytest.mark.parametrize(("frame_w", "frame_h"), [(640, 480), (480, 640), (1280, 720)])
def test_patch_maps_back_to_where_it_was(mode, frame_w, frame_h):
    box = (frame_w // 2 - 60, frame_h // 2 - 40, frame_w // 2 + 80, frame_h // 2 + 50)
    frame = _frame_with_patch(frame_w, frame_h, box)
    pre = Preprocessor(_spec((1, 160, 160, 3)), mode, "rgb", "0_1")
    tensor = np.zeros((1, 160, 160, 3), np.float32)
    transform = pre.prepare(frame, tensor)
    blue = tensor[0, :, :, 2]  # RGB order: blue is the last channel
    assert tensor[0, :, :, 0].max() == 0.0
    assert blue.max() == pytest.approx(1.0)
    back = transform.boxes_to_frame(_patch_in_tensor(blue))[0]
    tolerance = max(frame_w, frame_h) / 160 * 1.5  # one and a half input pixels
    assert np.allclose(back, box, atol=tolerance), (back, box)


def test_letterbox_pads_and_crop_cuts():
    transform, crop, size, offset = plan_fit(640, 480, 320, 320, "letterbox")
    assert size == (320, 240)
    assert offset == (0, 40)
    assert crop == (0, 0, 640, 480)
    # The top pad of the input maps above the frame and is clipped to its edge.
    assert transform.boxes_to_frame(np.array([[0.0, 0.0, 1.0, 1.0]]))[0].tolist() == [
        0.0,
        0.0,
        640.0,
        480.0,
    ]
    transform, crop, size, offset = plan_fit(640, 480, 320, 320, "crop")
    assert crop == (80, 0, 560, 480)
    assert transform.boxes_to_frame(np.array([[0.0, 0.0, 1.0, 1.0]]))[0].tolist() == [
        80.0,
        0.0,
        560.0,
        480.0,
    ]


def test_normalisation_per_dtype_and_range():
    assert normalisation(np.dtype(np.uint8), "auto") == (1.0, 0.0)
    assert normalisation(np.dtype(np.int8), "auto") == (1.0, -128.0)
    assert normalisation(np.dtype(np.float32), "auto") == (2.0 / 255.0, -1.0)
    assert normalisation(np.dtype(np.float32), "0_255") == (1.0, 0.0)


@pytest.mark.parametrize(
    ("dtype", "input_range", "black", "white"),
    [
        (np.float32, "auto", -1.0, 1.0),
        (np.float32, "0_1", 0.0, 1.0),
        (np.float32, "0_255", 0.0, 255.0),
        (np.uint8, "auto", 0, 255),
        (np.int8, "auto", -128, 127),
    ],
)
def test_value_ranges_written_into_the_tensor(dtype, input_range, black, white):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, 32:] = 255
    pre = Preprocessor(_spec((1, 16, 16, 3), dtype), "squash", "rgb", input_range)
    tensor = np.zeros((1, 16, 16, 3), dtype)
    pre.prepare(frame, tensor)
    assert tensor[0, 0, 0, 0] == pytest.approx(black)
    assert tensor[0, 0, 15, 0] == pytest.approx(white)


def test_nchw_and_bgr_order():
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[..., 2] = 200  # red in BGR
    tensor = np.zeros((1, 3, 8, 8), np.float32)
    Preprocessor(_spec((1, 3, 8, 8), layout="nchw"), "squash", "bgr", "0_255").prepare(
        frame, tensor
    )
    assert tensor[0, 2].min() == 200.0
    assert tensor[0, :2].max() == 0.0
    Preprocessor(_spec((1, 3, 8, 8), layout="nchw"), "squash", "rgb", "0_255").prepare(
        frame, tensor
    )
    assert tensor[0, 0].min() == 200.0


@given(
    frame_w=st.integers(16, 4096),
    frame_h=st.integers(16, 4096),
    in_w=st.integers(8, 640),
    in_h=st.integers(8, 640),
)
def test_every_mode_maps_what_the_model_sees_onto_the_frame(frame_w, frame_h, in_w, in_h):
    for mode in ("squash", "letterbox", "crop"):
        transform, crop, size, offset = plan_fit(frame_w, frame_h, in_w, in_h, mode)
        # The pasted image inside the input, in normalised input coordinates...
        px, py = offset
        seen = np.array([[px / in_w, py / in_h, (px + size[0]) / in_w, (py + size[1]) / in_h]])
        # ...maps onto exactly the frame region that was resized into it.
        back = transform.boxes_to_frame(seen)[0]
        assert np.allclose(back, crop, atol=1e-6 * max(frame_w, frame_h)), (mode, back, crop)
        x0, y0, x1, y1 = crop
        assert 0 <= x0 < x1 <= frame_w
        assert 0 <= y0 < y1 <= frame_h
        assert size[0] <= in_w
        assert size[1] <= in_h


@pytest.mark.parametrize(
    ("input_range", "affine"),
    [
        ("-1_1", None),
        ("0_1", None),
        ("0_255", None),
        ("auto", ((0.017, 0.0175, 0.0171), (-2.1, -2.03, -1.8))),  # mean/std per channel
        ("auto", ((0.5, 0.5, 0.5), (-1.0, -1.0, -1.0))),  # one affine for all channels
    ],
)
@pytest.mark.parametrize(
    ("mode", "frame_w", "frame_h"),
    [("squash", 32, 24), ("letterbox", 64, 24), ("letterbox", 16, 40), ("crop", 40, 24)],
)
def test_direct_float_path_writes_the_values_of_the_arithmetic_path(
    input_range, affine, mode, frame_w, frame_h
):
    # A contiguous float32 NHWC tensor is written directly (resized rectangle converted by
    # cv2, pad filled); a strided view of one cannot be, and gets canvas, widen, multiply,
    # add. Both must write the same values, to within float32 rounding of the largest
    # value, into every element: buffers start as NaN, so a pad left unwritten shows.
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (frame_h, frame_w, 3), dtype=np.uint8)
    pre = Preprocessor(_spec((1, 24, 32, 3)), mode, "rgb", input_range, channel_affine=affine)
    fast = np.full((1, 24, 32, 3), np.nan, np.float32)
    pre.prepare(frame, fast)
    strided = np.full((1, 24, 32, 4), np.nan, np.float32)[..., :3]
    pre.prepare(frame, strided)
    assert not strided[0].flags.c_contiguous
    assert np.isfinite(fast).all()
    rounding = 2 * np.finfo(np.float32).eps * max(1.0, float(np.abs(strided).max()))
    np.testing.assert_allclose(fast, strided, rtol=0, atol=rounding)


@pytest.mark.parametrize("mode", ["squash", "letterbox", "crop"])
def test_a_reused_buffer_gets_what_a_fresh_one_gets(mode):
    # The pipeline prepares every frame into one of the same few buffers; what a reused
    # buffer holds after each frame must be what a fresh preprocessor writes into a fresh
    # buffer, also when the frame size changes in between (another camera).
    rng = np.random.default_rng(3)
    shapes = [(24, 64), (24, 64), (40, 16), (24, 64), (40, 16)]
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    pre = Preprocessor(_spec((1, 24, 32, 3)), mode, "rgb", "auto")
    reused = np.full((1, 24, 32, 3), np.nan, np.float32)
    for frame in frames:
        transform = pre.prepare(frame, reused)
        fresh = np.full((1, 24, 32, 3), np.nan, np.float32)
        expected = Preprocessor(_spec((1, 24, 32, 3)), mode, "rgb", "auto").prepare(frame, fresh)
        assert transform == expected
        np.testing.assert_array_equal(reused, fresh)


def test_the_letterbox_pad_of_a_buffer_is_written_once():
    # Nothing but the preprocessor writes the pipeline's input buffers, so the pad band
    # (the same for every frame of one size) is filled on the first frame only.
    rng = np.random.default_rng(5)
    pre = Preprocessor(_spec((1, 24, 32, 3)), "letterbox", "rgb", "auto")
    tensor = np.zeros((1, 24, 32, 3), np.float32)
    pre.prepare(rng.integers(0, 256, (12, 64, 3), dtype=np.uint8), tensor)
    assert (tensor[0, :6] == -1.0).all()  # the top band: black in -1..1
    tensor[0, :6] = 7.0  # marks what a second write would overwrite
    second = rng.integers(0, 256, (12, 64, 3), dtype=np.uint8)
    pre.prepare(second, tensor)
    assert (tensor[0, :6] == 7.0).all()
    fresh = np.zeros_like(tensor)
    Preprocessor(_spec((1, 24, 32, 3)), "letterbox", "rgb", "auto").prepare(second, fresh)
    np.testing.assert_array_equal(tensor[0, 6:18], fresh[0, 6:18])

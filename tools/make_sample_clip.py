#!/usr/bin/env python3
"""Build the demo/test clip from real photographs: slow pans and zooms, 640x480.

Writes the clip and a sidecar JSON naming the photo shown in each frame range,
so tests know which frames hold a face (astronaut) and which do not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS = 640, 480, 15.0
# (photo, seconds, start zoom, end zoom); zoom 1.0 shows the whole photo letterboxed.
SEGMENTS = [
    ("astronaut.png", 3.0, 1.0, 1.4),
    ("coffee.png", 2.0, 1.0, 1.2),
    ("chelsea.png", 2.0, 1.1, 1.0),
    ("astronaut.png", 3.0, 1.6, 1.1),
    ("rocket.jpg", 2.0, 1.0, 1.3),
    ("motorcycle.png", 2.0, 1.2, 1.0),
]


def render(photo: np.ndarray, zoom: float) -> np.ndarray:
    """Fit the photo into the frame, then zoom about its upper-centre third (where faces are)."""
    h, w = photo.shape[:2]
    fit = min(WIDTH / w, HEIGHT / h) * zoom
    scaled = cv2.resize(
        photo, (max(1, round(w * fit)), max(1, round(h * fit))), interpolation=cv2.INTER_AREA
    )
    sh, sw = scaled.shape[:2]
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    cx, cy = sw // 2, int(sh * 0.4) if zoom > 1 else sh // 2
    x0 = int(np.clip(cx - WIDTH // 2, 0, max(0, sw - WIDTH)))
    y0 = int(np.clip(cy - HEIGHT // 2, 0, max(0, sh - HEIGHT)))
    crop = scaled[y0 : y0 + HEIGHT, x0 : x0 + WIDTH]
    oy, ox = (HEIGHT - crop.shape[0]) // 2, (WIDTH - crop.shape[1]) // 2
    canvas[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return canvas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit("OpenCV cannot write mp4v video here")
    ranges = []
    frame_index = 0
    for name, seconds, z0, z1 in SEGMENTS:
        photo = cv2.imread(str(args.images / name), cv2.IMREAD_COLOR)
        if photo is None:
            raise SystemExit(f"cannot read {args.images / name}")
        count = round(seconds * FPS)
        for i in range(count):
            writer.write(render(photo, z0 + (z1 - z0) * i / max(1, count - 1)))
        ranges.append(
            {
                "photo": name,
                "first": frame_index,
                "last": frame_index + count - 1,
                "has_face": name == "astronaut.png",
            }
        )
        frame_index += count
    writer.release()
    tmp.replace(args.out)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "fps": FPS,
                "width": WIDTH,
                "height": HEIGHT,
                "frames": frame_index,
                "segments": ranges,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"wrote {args.out} ({frame_index} frames at {FPS:g} fps)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

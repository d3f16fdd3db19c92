#!/usr/bin/env python3
"""Build the checkout's demo/test clip from real photographs: slow pans and zooms, 640x480.

Writes the clip and a sidecar JSON naming the photo shown in each frame range,
so tests know which frames hold a face (astronaut) and which do not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2

from agent.sample_clip import FPS, HEIGHT, WIDTH, Segment, frame_count, iter_frames

# (photo, seconds, start zoom, end zoom); zoom 1.0 shows the whole photo letterboxed.
SEGMENTS = [
    Segment("astronaut.png", 3.0, 1.0, 1.4),
    Segment("coffee.png", 2.0, 1.0, 1.2),
    Segment("chelsea.png", 2.0, 1.1, 1.0),
    Segment("astronaut.png", 3.0, 1.6, 1.1),
    Segment("rocket.jpg", 2.0, 1.0, 1.3),
    Segment("motorcycle.png", 2.0, 1.2, 1.0),
]


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
    for segment in SEGMENTS:
        count = frame_count(segment)
        ranges.append(
            {
                "photo": segment.photo,
                "first": frame_index,
                "last": frame_index + count - 1,
                "has_face": segment.photo == "astronaut.png",
            }
        )
        frame_index += count
    try:
        for _segment, image in iter_frames(cv2, args.images, SEGMENTS):
            writer.write(image)
    except OSError as exc:
        raise SystemExit(str(exc)) from exc
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

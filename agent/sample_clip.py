"""The sample clip: slow pans and zooms over real photographs, 640x480 at 15 fps.

``tools/make_sample_clip.py`` renders the checkout's clip (six photos, mp4) with ``render``;
an installed package renders its own from the three photos it ships (``build_clip``), as
Motion-JPEG in an .avi because OpenCV writes and reads that without FFmpeg (a system
OpenCV on a Jetson may lack it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

WIDTH, HEIGHT, FPS = 640, 480, 15.0


class Segment(NamedTuple):
    photo: str
    seconds: float
    zoom_start: float
    zoom_end: float  # 1.0 shows the whole photo letterboxed


# The packaged clip: a face for the first 3 s (the demo's first events), then none for 4 s.
PACKAGED_SEGMENTS = (
    Segment("astronaut.jpg", 3.0, 1.0, 1.4),
    Segment("coffee.jpg", 2.0, 1.0, 1.2),
    Segment("chelsea.jpg", 2.0, 1.1, 1.0),
    Segment("astronaut.jpg", 3.0, 1.6, 1.1),
)


def render(cv2: Any, photo: npt.NDArray[np.uint8], zoom: float) -> npt.NDArray[np.uint8]:
    """Fit the photo into the frame, then zoom about its upper-centre third (where faces are)."""
    h, w = photo.shape[:2]
    fit = min(WIDTH / w, HEIGHT / h) * zoom
    size = (max(1, round(w * fit)), max(1, round(h * fit)))
    scaled: npt.NDArray[np.uint8] = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    sh, sw = scaled.shape[:2]
    canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    cx, cy = sw // 2, int(sh * 0.4) if zoom > 1 else sh // 2
    x0 = int(np.clip(cx - WIDTH // 2, 0, max(0, sw - WIDTH)))
    y0 = int(np.clip(cy - HEIGHT // 2, 0, max(0, sh - HEIGHT)))
    crop = scaled[y0 : y0 + HEIGHT, x0 : x0 + WIDTH]
    oy, ox = (HEIGHT - crop.shape[0]) // 2, (WIDTH - crop.shape[1]) // 2
    canvas[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    return canvas


def frame_count(segment: Segment) -> int:
    return max(1, round(segment.seconds * FPS))


def iter_frames(
    cv2: Any, images: Path, segments: Sequence[Segment]
) -> Iterator[tuple[Segment, npt.NDArray[np.uint8]]]:
    """Every frame of every segment, one at a time (a Pi has no room for the whole clip)."""
    photos: dict[str, npt.NDArray[np.uint8]] = {}
    for segment in segments:
        if segment.photo not in photos:
            photo = cv2.imread(str(images / segment.photo), cv2.IMREAD_COLOR)
            if photo is None:
                raise OSError(f"cannot read {images / segment.photo}")
            photos[segment.photo] = photo
        count = frame_count(segment)
        span = segment.zoom_end - segment.zoom_start
        for i in range(count):
            zoom = segment.zoom_start + span * i / max(1, count - 1)
            yield segment, render(cv2, photos[segment.photo], zoom)


def build_clip(images: Path, out: Path, segments: Sequence[Segment] = PACKAGED_SEGMENTS) -> int:
    """Write the clip as Motion-JPEG .avi through a temp name; the number of frames written."""
    import cv2  # noqa: PLC0415 - only the demo and bench need OpenCV

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.part.avi")  # concurrent demos
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise OSError("OpenCV cannot write Motion-JPEG video here")
    written = 0
    try:
        for _segment, image in iter_frames(cv2, images, segments):
            writer.write(image)
            written += 1
    except BaseException:
        writer.release()
        tmp.unlink(missing_ok=True)
        raise
    writer.release()
    if written == 0:
        tmp.unlink(missing_ok=True)
        raise OSError("no frame was written")
    tmp.replace(out)
    return written

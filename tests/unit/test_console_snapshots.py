"""The console's store of published snapshots: newest per device, bounded bytes."""

from __future__ import annotations

from agent.fleet.console.snapshots import LatestImages

ROOT = "ea/v1"


def jpeg(size: int, fill: bytes = b"x") -> bytes:
    return b"\xff\xd8\xff" + fill * (size - 3)


def topic(device: str, camera: str = "door") -> str:
    return f"{ROOT}/d/{device}/snapshot/{camera}"


def test_newest_per_device_whatever_the_camera() -> None:
    images = LatestImages(ROOT)
    assert images.filter() == "ea/v1/d/+/snapshot/+"
    images.on_message(topic("cam-1", "door"), jpeg(100, b"a"))
    images.on_message(topic("cam-1", "yard"), jpeg(200, b"b"))
    image = images.get("cam-1")
    assert image is not None
    assert (image.camera, len(image.jpeg), image.seq) == ("yard", 200, 2)
    assert images.total_bytes == 200  # the older image's bytes were given back
    # A cleared retained image of another camera leaves the newest; its own clears it.
    images.on_message(topic("cam-1", "door"), b"")
    assert images.get("cam-1") is not None
    images.on_message(topic("cam-1", "yard"), b"")
    assert images.get("cam-1") is None
    assert images.total_bytes == 0


def test_bounded_and_only_jpegs() -> None:
    images = LatestImages(ROOT, max_image_bytes=1000, max_total_bytes=2500)
    images.on_message(topic("big"), jpeg(1001))
    images.on_message(topic("png"), b"\x89PNG\r\n\x1a\n" + b"x" * 10)
    assert images.get("big") is None
    assert images.get("png") is None
    assert images.ignored == 2
    for n in range(4):
        images.on_message(topic(f"cam-{n}"), jpeg(1000))
    assert images.total_bytes <= 2500
    assert [images.get(f"cam-{n}") is not None for n in range(4)] == [False, False, True, True]
    assert images.evicted == 2
    # Other topics under the root are not this store's business.
    images.on_message(f"{ROOT}/d/cam-9/snapshot", jpeg(10))
    images.on_message(f"{ROOT}/d/cam-9/m/stats", jpeg(10))
    assert images.get("cam-9") is None

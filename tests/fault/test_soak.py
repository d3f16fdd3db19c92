"""Long run: the full pipeline with the real model, RSS and open fds sampled, slopes reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.conftest import figure
from tools.soak import soak


def check(result: dict[str, object], seconds: float) -> None:
    figure(f"soak[{seconds:g}s]", **result)
    assert isinstance(result["events"], int)
    assert result["events"] > 0  # detections kept flowing the whole time
    assert result["inference_errors"] == 0
    fds = result["fds"]
    assert isinstance(fds, dict)
    assert fds["last"] - fds["first"] <= 4  # no descriptor leaks per frame or per event
    rss_slope = result["rss_slope_mb_per_min"]
    assert isinstance(rss_slope, float)
    # Generous: a leak of a frame per second (0.9 MB) would be ~50 MB/min.
    assert rss_slope < 5.0


def test_soak_ci(tmp_path: Path, sample_clip: Path, short_range_model: Path) -> None:
    check(soak(20.0, sample_clip, short_range_model, tmp_path / "state"), 20.0)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_soak_30_minutes(tmp_path: Path, sample_clip: Path, short_range_model: Path) -> None:
    check(soak(1800.0, sample_clip, short_range_model, tmp_path / "state"), 1800.0)

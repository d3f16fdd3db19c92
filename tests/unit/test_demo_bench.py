"""``edge-agent demo`` and ``edge-agent bench`` end to end, in process."""

from __future__ import annotations

import json

from agent.cli.main import main


def test_demo_prints_detections_and_a_summary(capsys):
    assert main(["demo", "--seconds", "4"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    faces = [ln for ln in lines if ln.startswith("seq ") and " face " in ln]
    assert len(faces) >= 10  # the clip opens on the astronaut for 3 s
    assert "summary after" in out
    assert "inference_ms" in out
    assert "e2e_ms" in out


def test_bench_json(capsys):
    assert main(["bench", "--seconds", "2", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["raw"]["ips"] > 0
    assert result["pipeline"]["ips"] > 0
    assert 0 < result["ratio"] <= 2
    assert result["ratio"] == round(result["pipeline"]["ips"] / result["raw"]["ips"], 4)
    assert result["latency_ms"]["p95"] >= result["latency_ms"]["p50"] > 0
    assert result["rss_mb"] > 0
    assert result["runtime"]["name"] == "ai-edge-litert"
    assert result["runtime"]["version"]
    assert result["model"].endswith("face_detection_short_range.tflite")
    print(json.dumps({k: result[k] for k in ("ratio", "rss_mb", "latency_ms")}))

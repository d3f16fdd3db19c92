from __future__ import annotations

import io
import json
import logging
import random

import structlog

from agent import log
from agent.retry import Backoff


def test_json_lines_when_not_a_tty_and_stdlib_routed():
    stream = io.StringIO()
    log.configure(level="info", fmt="auto", stream=stream, cache_loggers=False)
    log.get_logger("agent.test").info("frame_dropped", camera="door", count=3)
    logging.getLogger("paho.client").warning("socket error")
    logging.getLogger("agent.quiet").debug("not shown")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "frame_dropped"
    assert lines[0]["camera"] == "door"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert lines[1]["event"] == "socket error"
    assert lines[1]["logger"] == "paho.client"
    assert len(lines) == 2
    structlog.reset_defaults()


def test_console_renderer_when_asked():
    stream = io.StringIO()
    log.configure(level="info", fmt="console", stream=stream, cache_loggers=False)
    log.get_logger("agent.test").info("link_up", url="mqtt://x")
    text = stream.getvalue()
    assert "link_up" in text
    assert "url=mqtt://x" in text
    structlog.reset_defaults()


def test_backoff_is_capped_jittered_and_resets():
    backoff = Backoff(base_s=1.0, cap_s=10.0, rng=random.Random(7))
    delays = [backoff.next_delay_s() for _ in range(50)]
    assert all(0.0 <= d <= 10.0 for d in delays)
    assert max(delays[10:]) > 5.0  # reaches the cap region
    assert len({round(d, 6) for d in delays}) > 40  # jittered, not a fixed ladder
    backoff.reset()
    assert backoff.next_delay_s() <= 1.0
    assert backoff.ceiling_s() == 2.0

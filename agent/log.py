"""structlog set-up: JSON lines under systemd, a console renderer on a TTY.

stdlib loggers (paho, urllib3, ...) go through the same processor chain, so a
journal line has one shape whoever wrote it.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]

# The agent's own recent log, for the support bundle where there is no journal: one file
# and one rotated copy of this size each (a bounded ring of JSON lines in the state dir).
RING_FILE = "log/agent.log"
RING_MAX_BYTES = 512 * 1024

# Cached loggers are faster, but a module logger cached once ignores later configuration
# (structlog.testing.capture_logs included): the test suite turns this off for the process.
CACHE_LOGGERS_DEFAULT = True

_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def _want_json(fmt: LogFormat, stream: TextIO) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    return not stream.isatty()


def configure(
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    cache_loggers: bool | None = None,
    ring_path: Path | None = None,
) -> None:
    """Configure structlog and the stdlib root logger. Safe to call more than once.

    ``ring_path``: also keep the recent log as JSON lines there (``RING_MAX_BYTES`` per file,
    one rotated copy); a path that cannot be written is skipped, never fatal.
    """
    if cache_loggers is None:
        cache_loggers = CACHE_LOGGERS_DEFAULT
    out = stream if stream is not None else sys.stderr
    renderer: structlog.types.Processor
    if _want_json(fmt, out):
        renderer = structlog.processors.JSONRenderer()
        exc_processors: list[structlog.types.Processor] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        exc_processors = []

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc_processors,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if ring_path is not None:
        ring = _ring_handler(ring_path)
        if ring is not None:
            root.handlers.append(ring)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(numeric if isinstance(numeric, int) else logging.INFO)
    # paho logs every packet at DEBUG; keep it at WARNING unless asked for.
    logging.getLogger("paho").setLevel(max(root.level, logging.WARNING))

    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=cache_loggers,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def _ring_handler(path: Path) -> logging.Handler | None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=RING_MAX_BYTES, backupCount=1, encoding="utf-8"
        )
    except OSError:
        return None
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.dict_tracebacks,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    return handler

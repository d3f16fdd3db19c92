"""State read from disk without the daemon: outbox depth, version facts. Read-only throughout."""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any

from agent import __version__

OUTBOX_DB = "outbox.db"
CLASS_COLUMNS = ("cls", "class")
VERSIONED_PACKAGES = (
    "paho-mqtt",
    "numpy",
    "pydantic",
    "cryptography",
    "ai-edge-litert",
    "tflite-runtime",
    "onnxruntime",
    "opencv-python-headless",
)


def class_label(value: Any) -> str:
    """The outbox's integer class as its name, when the uplink package is there to say."""
    try:
        classes = importlib.import_module("agent.uplink.classes")
        return str(classes.MsgClass(int(value)).name.lower())
    except (ImportError, ValueError, TypeError, AttributeError):
        return str(value)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.OperationalError:
        # WAL needs a writable -shm; immutable reads what is checkpointed, which is enough here.
        conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=1.0)
    return conn


def _rows(conn: sqlite3.Connection, sql: str, table: str) -> list[tuple[Any, ...]]:
    """Run ``sql`` with ``{}`` replaced by the quoted table name (names come from sqlite_master)."""
    quoted = '"' + table.replace('"', '""') + '"'
    return conn.execute(sql.format(quoted)).fetchall()


def _scalar(conn: sqlite3.Connection, sql: str, table: str) -> Any:
    return _rows(conn, sql, table)[0][0]


def outbox_summary(state_dir: Path) -> dict[str, Any]:
    """Rows per table, per message class, and the drop counters; never writes to the database."""
    path = state_dir / OUTBOX_DB
    if not path.exists():
        return {"present": False, "path": str(path)}
    summary: dict[str, Any] = {"present": True, "path": str(path), "bytes": path.stat().st_size}
    try:
        conn = _connect_read_only(path)
        try:
            tables = [
                str(r[0])
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if not str(r[0]).startswith("sqlite_")
            ]
            summary["rows"] = {t: _scalar(conn, "SELECT COUNT(*) FROM {}", t) for t in tables}
            for table in tables:
                cols = [str(c[1]) for c in _rows(conn, "PRAGMA table_info({})", table)]
                cls_col = next((c for c in CLASS_COLUMNS if c in cols), None)
                if cls_col is not None:
                    sql = f'SELECT "{cls_col}", COUNT(*) FROM {{}} GROUP BY 1'  # noqa: S608 - constant column
                    grouped = _rows(conn, sql, table)
                    summary["by_class"] = {class_label(v): n for v, n in grouped}
                if cols == ["name", "value"]:
                    summary[table] = dict(_rows(conn, "SELECT name, value FROM {}", table))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
    return summary


def package_versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def os_release(root: Path = Path("/")) -> str:
    try:
        text = (root / "etc/os-release").read_text(errors="replace")
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return ""


def version_info() -> dict[str, Any]:
    uname = platform.uname()
    return {
        "agent_version": __version__,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "kernel": f"{uname.system} {uname.release}",
        "machine": uname.machine,
        "hostname": uname.node,
        "os": os_release(),
        "packages": package_versions(),
    }

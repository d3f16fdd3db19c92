"""Check results, the report they form, its exit code and the phone-readable summary code."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    def __str__(self) -> str:
        return self.value


# One letter per check group, chosen to be distinct when spelt out on the phone.
CHECK_LETTERS: dict[str, str] = {
    "config": "F",
    "clock": "K",
    "disk": "D",
    "camera": "V",
    "model": "M",
    "broker": "B",
    "tls": "T",
    "trust": "R",
    "update": "U",
    "systemd": "S",
    "accelerator": "A",
    "thermal": "H",
}
UNKNOWN_LETTER = "X"
_EXIT_CODES = {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    hint: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "hint": self.hint,
        }
        if self.data:
            out["data"] = self.data
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CheckResult:
        return cls(
            name=str(raw.get("name", "?")),
            status=Status(raw.get("status", "fail")),
            detail=str(raw.get("detail", "")),
            hint=str(raw.get("hint", "")),
            data=dict(raw.get("data") or {}),
        )


def ok(name: str, detail: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.OK, detail, "", data)


def warn(name: str, detail: str, hint: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.WARN, detail, hint, data)


def fail(name: str, detail: str, hint: str, **data: Any) -> CheckResult:
    return CheckResult(name, Status.FAIL, detail, hint, data)


def worst(statuses: Iterable[Status]) -> Status:
    found = set(statuses)
    for status in (Status.FAIL, Status.WARN):
        if status in found:
            return status
    return Status.OK


def group_of(name: str) -> str:
    """``camera:door`` → ``camera``."""
    return name.partition(":")[0]


def letters(results: Iterable[CheckResult], status: Status) -> str:
    """Sorted, de-duplicated letters of the check groups with ``status``."""
    found = {
        CHECK_LETTERS.get(group_of(r.name), UNKNOWN_LETTER) for r in results if r.status is status
    }
    return "".join(sorted(found))


def summary_code(results: Iterable[CheckResult]) -> str:
    """``<exit>-<fail letters>-<warn letters>``, ``0`` standing for none: ``2-DM-K``, ``0-0-0``."""
    items = list(results)
    exit_code = _EXIT_CODES[worst(r.status for r in items)]
    return f"{exit_code}-{letters(items, Status.FAIL) or '0'}-{letters(items, Status.WARN) or '0'}"


@dataclass(frozen=True, slots=True)
class DiagReport:
    checks: tuple[CheckResult, ...]
    source: str = "local"  # "local": run by this process; "daemon": answered over the socket

    @property
    def status(self) -> Status:
        return worst(c.status for c in self.checks)

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self.status]

    @property
    def code(self) -> str:
        return summary_code(self.checks)

    def counts(self) -> dict[str, int]:
        return {s.value: sum(1 for c in self.checks if c.status is s) for s in Status}

    def to_json(self) -> dict[str, Any]:
        return {
            "checks": [c.to_json() for c in self.checks],
            "summary": {
                "status": self.status.value,
                "exit_code": self.exit_code,
                "code": self.code,
                "counts": self.counts(),
                "source": self.source,
            },
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], source: str = "daemon") -> DiagReport:
        checks = tuple(CheckResult.from_json(c) for c in raw.get("checks", []))
        return cls(checks=checks, source=source)

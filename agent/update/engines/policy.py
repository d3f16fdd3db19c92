"""Pure decisions about staging-built TensorRT engines: does one fit this runtime, which go.

No IO here: the callers (``engine_refresh``, ``engine_cache``) read ``_version.json``,
the cache sidecars and the importable TensorRT/GPU, and act on what these functions say.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.inference.trt_build import BuildTarget

# The facts an engine is tied to, as recorded in its sidecar and ``_version.json``.
FACT_KEYS = ("tensorrt", "gpu", "compute_capability")


class Fit(str, enum.Enum):
    MATCH = "match"  # built by this TensorRT for this GPU: load it
    STACK_CHANGED = "stack_changed"  # TensorRT, GPU or compute capability differ: rebuild
    FACTS_UNKNOWN = "facts_unknown"  # no recorded facts: try it; a failed load rebuilds
    RUNTIME_UNAVAILABLE = "runtime_unavailable"  # nothing to compare with or build on

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class EngineCheck:
    fit: Fit
    # fact -> (recorded, runtime) for every fact that differs
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def rebuild(self) -> bool:
        return self.fit is Fit.STACK_CHANGED


def target_facts(target: BuildTarget) -> dict[str, str]:
    return {
        "tensorrt": target.trt_version,
        "gpu": target.gpu,
        "compute_capability": target.compute_capability,
    }


def check_engine(recorded: Mapping[str, Any], runtime: BuildTarget | None) -> EngineCheck:
    """Does an engine with ``recorded`` facts deserialize on ``runtime``?

    TensorRT refuses a plan from any other library version (patch included) and a GPU
    of another compute capability; the GPU name is compared too, as the cache key is.
    """
    if runtime is None:
        return EngineCheck(Fit.RUNTIME_UNAVAILABLE)
    if any(not isinstance(recorded.get(key), str) or not recorded[key] for key in FACT_KEYS):
        return EngineCheck(Fit.FACTS_UNKNOWN)
    now = target_facts(runtime)
    changed = {
        key: (str(recorded[key]), now[key]) for key in FACT_KEYS if str(recorded[key]) != now[key]
    }
    return EngineCheck(Fit.STACK_CHANGED if changed else Fit.MATCH, changed)


class Choice(str, enum.Enum):
    INSTALLED = "installed"  # load the engine linked into the version dir
    REBUILT = "rebuilt"  # load the cache's engine for this runtime (a rebuild made it)
    REBUILD = "rebuild"  # nothing loadable yet: rebuild from the verified ONNX file first

    def __str__(self) -> str:
        return self.value


def choose_engine(check: EngineCheck, *, rebuilt_in_cache: bool) -> Choice:
    """Which engine a load uses.

    ``rebuilt_in_cache``: the cache holds an engine for this ONNX file and runtime that
    is not the version dir's own file (a rebuild after an upgrade or a failed load).
    """
    if check.fit is Fit.RUNTIME_UNAVAILABLE:
        return Choice.INSTALLED  # the backend reports the missing runtime itself
    if rebuilt_in_cache:
        return Choice.REBUILT
    return Choice.REBUILD if check.rebuild else Choice.INSTALLED


def describe(facts: Mapping[str, Any]) -> str:
    """``TensorRT 10.3.0 on Orin (sm87)`` (missing facts shown as ``?``)."""
    cc = str(facts.get("compute_capability") or "?").replace(".", "")
    return f"TensorRT {facts.get('tensorrt') or '?'} on {facts.get('gpu') or '?'} (sm{cc})"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One ``<key>.engine`` in the cache, with what its sidecar and ``stat`` say."""

    name: str
    links: int  # st_nlink: > 1 while a version dir holds a hard link to it
    age_s: float
    onnx_sha256: str = ""  # from the sidecar; "" when it is missing or unreadable
    facts: Mapping[str, Any] = field(default_factory=dict)


def engines_to_prune(
    entries: Iterable[CacheEntry],
    *,
    referenced: frozenset[str],
    live_onnx: frozenset[str],
    runtime: BuildTarget | None,
    min_age_s: float,
) -> list[str]:
    """Names of cache entries that nothing needs any more.

    Kept: an entry a version dir links (``links > 1``) or names (``referenced``: the
    ``_engine-*`` names, for a store that fell back to a copy); one younger than
    ``min_age_s`` (a staging in another process may be about to link it); and one
    rebuilt for an installed ONNX file (``live_onnx``) that fits ``runtime`` (any
    runtime when it is unknown), since a rebuilt engine is never linked into the
    read-only version dir.
    """
    doomed: list[str] = []
    for entry in entries:
        if entry.links > 1 or entry.name in referenced or entry.age_s < min_age_s:
            continue
        if (
            entry.onnx_sha256
            and entry.onnx_sha256 in live_onnx
            and (runtime is None or check_engine(entry.facts, runtime).fit is Fit.MATCH)
        ):
            continue
        doomed.append(entry.name)
    return sorted(doomed)

"""What an operator's remote ``config`` command may set: an explicit allow-list.

Anyone with publish rights on the broker can send a ``config`` command, so it may only tune
how the agent works (thresholds, rates, intervals, which named camera a model watches),
never where it connects, what it authenticates with, which files it reads or what it
trusts. Cameras and models are addressed by their ``name``/``slot`` in the config file;
their sources and model paths stay the file's. Pure functions: no IO.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.config.base import SECRET_PREFIX
from agent.errors import ConfigIssue

SECTION_KEYS: Mapping[str, frozenset[str]] = {
    "telemetry": frozenset(
        {
            "stats_interval_s",
            "health_interval_s",
            "drift_window_events",
            "drift_hist_limit",
            "drift_rate_limit",
        }
    ),
    "logging": frozenset({"level"}),
    "outbox": frozenset({"alarm_ttl_s", "detection_ttl_s", "stats_ttl_s", "drain_rate_per_s"}),
}
CAMERA_KEYS = frozenset(
    {"fps", "loop", "width", "height", "stall_timeout_s", "open_timeout_s", "reconnect_max_s"}
)
MODEL_KEYS = frozenset(
    {
        "decoder",
        "cameras",
        "threshold",
        "label_thresholds",
        "resize_mode",
        "crop_fraction",
        "color_order",
        "input_range",
        "mean",
        "std",
        "output",
        "nms_iou",
        "agnostic_nms",
        "max_detections",
        "top_k",
        "debounce_frames",
        "motion_gate",
        "motion_threshold",
    }
)
# List sections: (identifying key, its default in the file, keys allowed besides it).
LIST_SECTIONS: Mapping[str, tuple[str, str, frozenset[str]]] = {
    "cameras": ("name", "cam0", CAMERA_KEYS),
    "models": ("slot", "detector", MODEL_KEYS),
}
NOT_ALLOWED = (
    "cannot be set remotely: not on the allow-list (connection targets, credentials, "
    "paths and trust settings stay in the config file)"
)


def _issue(label: str, key_path: str, message: str = NOT_ALLOWED) -> ConfigIssue:
    # The value is never echoed: it is an attacker's input and may name a secret's path.
    return ConfigIssue(label, key_path, "<not shown>", message)


def _file_refs(node: Any, key_path: str, label: str) -> list[ConfigIssue]:
    if isinstance(node, str):
        if node.strip().startswith(SECRET_PREFIX):
            return [_issue(label, key_path, "file: references cannot be set remotely")]
        return []
    if isinstance(node, Mapping):
        return [
            issue
            for key, value in node.items()
            for issue in _file_refs(value, f"{key_path}.{key}" if key_path else str(key), label)
        ]
    if isinstance(node, list):
        return [i for n, v in enumerate(node) for i in _file_refs(v, f"{key_path}[{n}]", label)]
    return []


def _names(file_tree: Mapping[str, Any], section: str) -> list[str]:
    ident, default, _ = LIST_SECTIONS[section]
    entries = file_tree.get(section)
    if not isinstance(entries, list):
        return []
    return [str(e.get(ident, default)) for e in entries if isinstance(e, Mapping)]


def _list_issues(
    section: str, value: Any, file_tree: Mapping[str, Any], label: str
) -> list[ConfigIssue]:
    ident, _, allowed = LIST_SECTIONS[section]
    if not isinstance(value, list) or not all(isinstance(e, Mapping) for e in value):
        return [_issue(label, section, f"must be a list of tables naming each entry's {ident}")]
    known = _names(file_tree, section)
    issues: list[ConfigIssue] = []
    for index, entry in enumerate(value):
        where = f"{section}[{index}]"
        name = entry.get(ident)
        if name not in known:
            issues.append(
                _issue(
                    label,
                    f"{where}.{ident}",
                    f"must name one of the config file's {section} ({', '.join(known) or 'none'})"
                    "; entries cannot be added remotely",
                )
            )
        issues += [_issue(label, f"{where}.{k}") for k in entry if k != ident and k not in allowed]
    return issues


def remote_issues(
    tree: Mapping[str, Any], file_tree: Mapping[str, Any], label: str
) -> list[ConfigIssue]:
    """Every key of a remote layer that is off the allow-list, and every ``file:`` value."""
    issues: list[ConfigIssue] = []
    for section, value in tree.items():
        if section in LIST_SECTIONS:
            issues += _list_issues(section, value, file_tree, label)
        elif section in SECTION_KEYS:
            if not isinstance(value, Mapping):
                issues.append(_issue(label, section, "must be a table"))
                continue
            allowed = SECTION_KEYS[section]
            issues += [_issue(label, f"{section}.{k}") for k in value if k not in allowed]
        elif isinstance(value, Mapping) and value:
            issues += [_issue(label, f"{section}.{k}") for k in value]  # name every key
        else:
            issues.append(_issue(label, section))
    return issues + _file_refs(dict(tree), "", label)


def expand_lists(tree: Mapping[str, Any], file_tree: Mapping[str, Any]) -> dict[str, Any]:
    """The layer with ``cameras``/``models`` entries merged by name onto the file's lists.

    Lists replace lower layers whole, so a remote ``{name, fps}`` must carry the file's
    source along; entries the remote does not name stay as the file has them.
    """
    out = dict(tree)
    for section, (ident, default, _) in LIST_SECTIONS.items():
        remote = tree.get(section)
        base = file_tree.get(section)
        if not isinstance(remote, list) or not isinstance(base, list):
            continue
        by_name = {e.get(ident): e for e in remote if isinstance(e, Mapping)}
        merged = []
        for entry in base:
            if not isinstance(entry, Mapping):
                merged.append(entry)
                continue
            over = by_name.get(entry.get(ident, default), {})
            merged.append({**entry, **over})
        out[section] = merged
    return out

"""Render docs/broker/acl.template into a Mosquitto ACL file for given operators and devices.

The template's ``# >>> operator`` / ``# >>> device`` blocks (up to the matching ``# <<<``
line) are repeated per account; ``${root}``, ``${operator}``, ``${device}`` and
``${fleet}`` are filled in. Names are checked so no one can smuggle ACL lines or wildcards.

Usage: python tools/render_broker_acl.py --root ea/v1 --operator fleet-ops \
           --device cam-001:default --device cam-002:lab docs/broker/acl.template
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from string import Template

from agent.config.device import DEVICE_ID_RE

ROOT_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
BLOCK_RE = re.compile(r"^# >>> (\w+)[^\n]*\n(.*?)^# <<< \1[^\n]*\n", re.MULTILINE | re.DOTALL)


def _checked(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(value):
        raise ValueError(f"{kind} {value!r} is not a safe topic name")
    return value


def render_acl(
    template: str, root: str, operators: Sequence[str], devices: Sequence[tuple[str, str]]
) -> str:
    """The ACL text: shared lines once, each block once per operator / device."""
    root = _checked("root", root, ROOT_RE)
    values: dict[str, list[dict[str, str]]] = {
        "operator": [
            {"root": root, "operator": _checked("operator", op, DEVICE_ID_RE)} for op in operators
        ],
        "device": [
            {
                "root": root,
                "device": _checked("device", dev, DEVICE_ID_RE),
                "fleet": _checked("fleet", fleet, DEVICE_ID_RE),
            }
            for dev, fleet in devices
        ],
    }

    def expand(match: re.Match[str]) -> str:
        body = match.group(2)
        return "".join(Template(body).substitute(v) for v in values.get(match.group(1), []))

    expanded = BLOCK_RE.sub(expand, template)
    # Shared lines keep %u for Mosquitto; only ${root} is filled in there.
    return Template(expanded).substitute(root=root)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("template", type=Path)
    parser.add_argument("--root", default="ea/v1")
    parser.add_argument("--operator", action="append", default=[])
    parser.add_argument("--device", action="append", default=[], metavar="ID:FLEET")
    args = parser.parse_args(argv)
    devices = []
    for item in args.device:
        dev, _, fleet = item.partition(":")
        devices.append((dev, fleet or "default"))
    try:
        text = render_acl(
            args.template.read_text(encoding="utf-8"), args.root, args.operator, devices
        )
    except (ValueError, KeyError) as exc:
        sys.stderr.write(f"render_broker_acl: {exc}\n")
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

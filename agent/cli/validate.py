"""``edge-agent validate-config [PATH]``: every error with file, key path, value and message."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.common import print_json
from agent.config import default_config_path, redacted_dump
from agent.config.desired import desired_path, load_with_desired
from agent.config.paths import missing_files
from agent.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "validate-config",
        help="check a config file; exit 0 valid, 1 invalid",
        description="Validate a config file with its board profile, environment and --set flags.",
    )
    parser.add_argument("path", nargs="?", type=Path, default=None, help="config file to check")
    parser.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE"
    )
    parser.add_argument(
        "--print", dest="show", action="store_true", help="print the effective config (redacted)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.path or default_config_path()
    try:
        # With the operator's desired layer when the state dir exists; issues name their layer
        # (the file, "mqtt:config vN", "env:NAME", "flag:--set KEY").
        loaded = load_with_desired(path, assignments=args.assignments)
    except ConfigError as exc:
        sys.stderr.write(f"{path}: invalid: {exc}\n")
        for issue in exc.issues:
            sys.stderr.write(f"  {issue.render()}\n")
        return 1
    missing = missing_files(loaded.config, loaded.sources)
    for ref, source in missing:
        if ref.severity == "warning":
            later = " (a camera may appear later)" if ref.key_path.startswith("cameras") else ""
            sys.stderr.write(f"{path}: warning: {ref.render(source)}{later}\n")
    errors = [(ref, source) for ref, source in missing if ref.severity == "error"]
    if errors:
        sys.stderr.write(f"{path}: invalid: {len(errors)} referenced file(s) missing\n")
        for ref, source in errors:
            sys.stderr.write(f"  {ref.render(source)}\n")
        return 1
    if args.show:
        print_json(redacted_dump(loaded.config))
    else:
        cfg = loaded.config
        desired = ""
        if loaded.desired_version is not None:
            where = desired_path(Path(cfg.storage.state_dir))
            desired = f", desired config v{loaded.desired_version} from {where}"
        print(
            f"{path}: valid (profile {loaded.profile}, {len(cfg.cameras)} camera(s), "
            f"{len(cfg.models)} model(s){desired})"
        )
    return 0

"""MQTT 5 shared subscription groups of chunk servers: the name rule and the CLI flag."""

from __future__ import annotations

import argparse


def valid_share_group(name: str) -> bool:
    """An MQTT 5 share name: not empty, no '/', '+' or '#' (spec 4.8.2)."""
    return bool(name) and not any(c in name for c in "/+#")


def _share_group(text: str) -> str:
    # argparse also runs this on the "" default: empty means no shared subscription.
    if text and not valid_share_group(text):
        msg = f"a share group name is a non-empty name without '/', '+' or '#', got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


def add_share_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--share-group",
        type=_share_group,
        default=None,  # not "": argparse runs a string default through ``type``
        metavar="NAME",
        help="serve chunk requests as one of the servers subscribed with this MQTT 5 shared "
        "subscription group ($share/NAME/...); every server of a fleet uses the same NAME",
    )

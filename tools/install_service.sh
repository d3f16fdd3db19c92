#!/usr/bin/env bash
# Kept for existing checkouts and scripts: the service is installed by
# `edge-agent setup-service` (docs/systemd.md); this runs it from the checkout (its .venv's
# Python when there is one) with the same arguments, e.g. --root DIR --board rpi --enable.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="$here/.venv/bin/python"
[ -x "$py" ] || py=python3
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m agent setup-service "$@"

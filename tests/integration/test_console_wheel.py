"""The wheel carries the console's templates, scripts and vendored libraries with licences,
and declares the ``console`` extra (so ``pip install 'edge-agent[console]'`` runs it)."""

from __future__ import annotations

import zipfile


def test_wheel_has_the_console_files_and_extra(built_wheel):
    with zipfile.ZipFile(built_wheel) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = wheel.read(metadata).decode()
    console = "agent/fleet/console/"
    for rel in (
        "templates/fleet.html",
        "templates/deployments_list.html",
        "static/console.js",
        "static/charts.js",
        "static/vendor/htmx.min.js",
        "static/vendor/htmx.LICENSE",
        "static/vendor/uPlot.iife.min.js",
        "static/vendor/uPlot.LICENSE",
        "static/vendor/VERSIONS.json",
    ):
        assert console + rel in names, rel
    assert "Provides-Extra: console" in meta
    assert 'starlette>=0.37; extra == "console"' in meta

"""The human table for a TTY (rich) and the one-line summary a technician reads out."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.diag.report import DiagReport, Status

STYLES = {Status.OK: "bold green", Status.WARN: "bold yellow", Status.FAIL: "bold red"}
LABELS = {Status.OK: "OK", Status.WARN: "WARN", Status.FAIL: "FAIL"}


def summary_line(report: DiagReport) -> str:
    counts = report.counts()
    return (
        f"code {report.code}  ({counts['fail']} fail, {counts['warn']} warn, {counts['ok']} ok; "
        f"{'asked the running daemon' if report.source == 'daemon' else 'run locally'})"
    )


def build_table(report: DiagReport) -> Table:
    table = Table(title="edge-agent diag", show_lines=False, expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("hint", overflow="fold", style="dim")
    for check in report.checks:
        table.add_row(
            Text(LABELS[check.status], style=STYLES[check.status]),
            check.name,
            check.detail,
            check.hint,
        )
    return table


def render_table(report: DiagReport, stream: TextIO, width: int | None = None) -> None:
    console = Console(file=stream, width=width, highlight=False)
    console.print(build_table(report))
    console.print(Text(summary_line(report), style=STYLES[report.status]))

"""Human-readable end-of-run summary (the JSON report is `RunSummary.to_json`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.run import RunSummary


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_summary(summary: RunSummary, console: Console) -> None:
    table = Table(title=f"run {summary.record.run_id}")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for name in summary.ran:
        result = summary.record.stages[name]
        shown = result.output.highlights() if result.output is not None else {}
        detail = ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        table.add_row(name, result.status, f"{result.duration_s:.1f}", detail)
    console.print(table)

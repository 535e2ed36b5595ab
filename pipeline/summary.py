"""Human-readable end-of-run summary (the JSON report is `RunSummary.to_json`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# The few outputs worth a glance per stage; the JSON report has all of them.
HIGHLIGHTS: dict[str, tuple[str, ...]] = {
    "load": ("format", "cut_layer"),
    "transfer": ("test_accuracy", "baseline_accuracy"),
    "export": ("version_dir",),
    "push": ("uri", "bytes_uploaded"),
    "rollout": ("action", "version", "endpoint"),
    "verify": ("max_abs_diff", "served_versions"),
}


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render_summary(summary: Any, console: Console) -> None:
    table = Table(title=f"run {summary.record.run_id}")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for name in summary.ran:
        result = summary.record.stages[name]
        keys = HIGHLIGHTS.get(name, ())
        detail = ", ".join(f"{k}={_fmt(result.outputs[k])}" for k in keys if k in result.outputs)
        table.add_row(name, result.status, f"{result.duration_s:.1f}", detail)
    console.print(table)

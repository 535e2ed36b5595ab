"""Progress in a log (not a terminal): whole lines, never a bar cut at 80 columns."""

import io

from rich.console import Console

from pipeline import progress
from pipeline.progress import Reporter


def test_a_log_gets_whole_lines_with_the_latest_status(monkeypatch):
    out = io.StringIO()
    reporter = Reporter(console=Console(file=out))
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # a line per step
    status = "loss 0.123 val_loss 0.456 val_accuracy 0.789 — long enough to pass eighty columns easily"
    with reporter.progress("train head (cached features)", 3, unit="epochs") as advance:
        for _ in range(3):
            advance(1, status=status)
    reporter.note("n" * 120)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("train head (cached features): 1/3 epochs 33% in ") and lines[0].endswith(status)
    assert lines[-2].startswith("train head (cached features): 3/3 epochs 100%")
    assert lines[-1] == "n" * 120 and len(lines) == 5  # 3 steps, the final line, the note


def test_lines_are_throttled_and_bytes_shown_in_mib():
    out = io.StringIO()
    with Reporter(console=Console(file=out)).progress("upload", 4 * 2**20, unit="bytes") as advance:
        for _ in range(4):
            advance(2**20)
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]  # only the final line
    assert out.getvalue().startswith("upload: 4.0/4.0 MiB 100% in ")

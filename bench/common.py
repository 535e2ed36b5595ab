"""Shared bits of the `make bench` scripts: argument parsing and the JSON result file."""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def parse_out(description: str) -> Path:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    return parser.parse_args().out


def write_results(out: Path, name: str, results: dict[str, Any]) -> None:
    """One JSON document per benchmark, with enough context to compare runs."""
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "at": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               **results}
    out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))

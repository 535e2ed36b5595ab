"""The `tfrollout` console script: start-up settings that must precede the CLI's imports.

Kept apart from `pipeline.cli` so that importing the CLI as a library (tests, other
tools) changes nothing process-wide.
"""

from __future__ import annotations

import os


def main() -> None:
    """Pause the garbage collector and skip pydantic's plugin scan, then run the CLI."""
    from pipeline.startup import pause_collector

    pause_collector()
    # pydantic scans every installed distribution's entry points for plugins when the first
    # model class is built (≈8 ms per start); the CLI's config models use none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from pipeline.cli import main as cli_main

    cli_main()

"""The `tfrollout` console script: start-up settings that must precede the CLI's imports.

Kept apart from `pipeline.cli` so that importing the CLI as a library (tests, other
tools) changes nothing process-wide.
"""

from __future__ import annotations

import os


def main() -> None:
    """Pause the garbage collector, skip pydantic's plugin scan, TensorFlow without oneDNN
    (as the servers run it), then run the CLI."""
    from pipeline.startup import pause_collector

    pause_collector()
    # pydantic scans every installed distribution's entry points for plugins when the first
    # model class is built (≈8 ms per start); the CLI's config models use none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # The golden outputs verify compares with must come from the kernels that will serve:
    # TF Serving's release build and this project's server run without oneDNN, and an
    # int8 export's outputs differed from its served canary by 3.8e-5 when the pipeline
    # used oneDNN (float32: 1.1e-6). Costs ~1.3x training time on the demo CNN (2 cores);
    # TF_ENABLE_ONEDNN_OPTS=1 trains with oneDNN (then loosen verify.atol accordingly).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from pipeline.cli import main as cli_main

    cli_main()

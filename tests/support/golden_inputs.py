"""One request's inputs taken from a version's golden set: what the load and swarm tests send."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.verify.golden import load_golden


def inputs(versions: Any, version: int = 1) -> dict[str, np.ndarray]:
    """The first example of `versions.golden[version]` (a `tests.rollout.models.Versions`), batch 1."""
    golden: Mapping[int, Path] = versions.golden
    return {k: v[:1] for k, v in load_golden(golden[version]).inputs.items()}

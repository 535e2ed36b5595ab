"""The `tfrollout` console script of this venv: what subprocess tests run, as CI would."""

from __future__ import annotations

import sys
from pathlib import Path

TFROLLOUT = str(Path(sys.executable).with_name("tfrollout"))

"""Import TensorFlow without its C++ start-up chatter on stderr.

TF 2.21 logs oneDNN/CUDA-probing lines through absl while its libraries load, and
ignores `TF_CPP_MIN_LOG_LEVEL` set from inside the process; those lines would bury
the CLI's one-line errors. The import runs with file descriptor 2 pointed at
/dev/null; `--debug` (or TFROLLOUT_TF_LOGS=1) keeps them.
"""

from __future__ import annotations

import os
import sys


def import_tensorflow_quietly(show_logs: bool = False) -> None:
    if "tensorflow" in sys.modules or show_logs or os.environ.get("TFROLLOUT_TF_LOGS") == "1":
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

"""`tfrollout-model-server`: run the TF Serving-compatible server until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    from .flags import parse_flags

    flags = parse_flags(argv)  # before importing TF: `--help` and flag errors stay fast
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")
    from .server import ModelServer

    server = ModelServer(flags)
    stop_requested = server.install_signal_handlers()
    server.start()
    while not stop_requested.wait(0.5):
        pass
    server.stop()
    logging.getLogger("modelserver").info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

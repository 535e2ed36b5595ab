"""`tfrollout-model-server`: run the TF Serving-compatible server until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

START_FAILED = 255  # tensorflow_model_server returns -1
CHECK_FAILED = 134  # a failed TF_CHECK_OK aborts it: SIGABRT, which a shell reports as 134


def _print_error(text: str, last_prefix: str) -> None:
    """TF Serving's start-up failure: the detail lines, then the status line it ends with."""
    lines = text.splitlines() or [""]
    for line in lines[:-1]:
        print(line, file=sys.stderr)
    print(f"{last_prefix}{lines[-1]}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from .flags import log_inert_flags, parse_flags

    flags = parse_flags(argv)  # before importing TF: `--help` and flag errors stay fast
    from .runtime import configure_tensorflow, version_text

    if flags.version:
        print(version_text())
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(name)s] %(message)s")
    log_inert_flags(flags)
    from serving.tfs_config import CheckFailedError, ConfigFileError

    from .errors import StartupError

    try:
        if not flags.platform_config_file:  # else its session_config decides (ModelServer)
            configure_tensorflow(flags)
        from .server import ModelServer

        server = ModelServer(flags)
        stop_requested = server.install_signal_handlers()
        server.start()
    except CheckFailedError as err:
        _print_error(str(err), f"Non-OK-status: {err.check} status: ")
        return CHECK_FAILED
    except (ConfigFileError, StartupError) as err:
        _print_error(str(err), "Failed to start server. Error: ")
        return START_FAILED
    while not stop_requested.wait(0.5):
        pass
    server.stop()
    logging.getLogger("modelserver").info("Server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

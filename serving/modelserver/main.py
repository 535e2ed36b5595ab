"""`tfrollout-model-server`: run the TF Serving-compatible server until SIGTERM."""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN kernels, off before TensorFlow is imported (see ONEDNN below)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ONEDNN = """Why TF_ENABLE_ONEDNN_OPTS=0 (issue 22, item 1).

With oneDNN on (TensorFlow's default on CPUs with AVX-512 VNNI/BF16/AMX; opt-in on
others), a Predict whose input has the wrong rank for a Conv2D, e.g. REST
`{"instances": [1.0, 2.0, 3.0]}` to the demo CNN, reaches the oneDNN convolution,
whose failed CHECK (`index >= 0 && index < num_total_dims`) aborts the process.
The plain kernels return INVALID_ARGUMENT (`convolution input must be 4-dimensional:
[3]`), which is what TF Serving answers: its release build has no oneDNN, and it
does not check inputs against the signature's shapes (predict_util.cc lets the
session fail). Checking shapes against the signature ourselves was rejected: it
would refuse requests TF Serving serves (the quickstart's `[1.0, 2.0, 5.0]` for an
`x: [-1, 1]` signature), and it would not cover the other oneDNN kernels.
Measured cost (bench/bench_onednn.py: the server's session path, median ms, best of
2 alternating rounds, 2-core AVX2 host, oneDNN forced on with =1; two runs agreed):
  demo CNN     batch 1   off 0.46  on 0.76   off/on 0.61 (oneDNN's per-op overhead)
  demo CNN     batch 64  off 5.12  on 4.65   off/on 1.10
  MobileNetV2  batch 1   off 35.8  on 24.7   off/on 1.45
  MobileNetV2  batch 64  off 2884  on 1314   off/on 2.19
Decision: off. The project's own model is faster at batch 1 and 10% slower at 64;
large convnets lose up to 2.2× throughput, but that is TF Serving's own speed (its
CPU build has no oneDNN), and with oneDNN any client could abort the server with one
malformed request. Who wants the speed and controls every client can set
TF_ENABLE_ONEDNN_OPTS=1: it is honoured (and logged as a warning)."""

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
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        logging.getLogger("modelserver").warning(
            "TF_ENABLE_ONEDNN_OPTS=%s: oneDNN kernels can abort the process on malformed inputs",
            os.environ.get("TF_ENABLE_ONEDNN_OPTS"))
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

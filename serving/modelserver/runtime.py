"""TensorFlow's thread pools from the flags, set before TF runs anything (its
pools are fixed once the eager context starts), with TF Serving's precedence:
--tensorflow_session_config_file, overridden by --tensorflow_intra_op_parallelism /
--tensorflow_inter_op_parallelism, else --tensorflow_session_parallelism for both."""

from __future__ import annotations

import logging
from importlib import metadata

from .flags import Flags

log = logging.getLogger("modelserver")

SERVER_VERSION = "0.1.0"


def version_text() -> str:
    """What `--version` prints (TF Serving's two lines; no TF import needed)."""
    try:
        tf_version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        tf_version = "unknown"
    return f"TensorFlow ModelServer: {SERVER_VERSION}-tfrollout\nTensorFlow Library: {tf_version}"


def thread_counts(flags: Flags, config_intra: int = 0, config_inter: int = 0) -> tuple[int, int]:
    """(intra, inter) op threads; 0 leaves TF's automatic choice."""
    intra, inter = flags.tensorflow_intra_op_parallelism, flags.tensorflow_inter_op_parallelism
    if intra > 0 and inter > 0 and flags.tensorflow_session_parallelism > 0:
        raise SystemExit("Either configure --tensorflow_session_parallelism or "
                         "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
                         "separately. You cannot configure both.")
    if intra > 0 or inter > 0:
        return intra or config_intra, inter or config_inter
    if flags.tensorflow_session_parallelism > 0:
        return flags.tensorflow_session_parallelism, flags.tensorflow_session_parallelism
    return config_intra, config_inter


def configure_tensorflow(flags: Flags) -> tuple[int, int]:
    """Apply the thread counts (and read the session config file); returns what was set."""
    config_intra = config_inter = 0
    if flags.tensorflow_session_config_file:
        from tensorflow.core.protobuf import config_pb2

        from serving import tfs_config

        cp = tfs_config.read_config_file(flags.tensorflow_session_config_file, config_pb2.ConfigProto())
        config_intra, config_inter = cp.intra_op_parallelism_threads, cp.inter_op_parallelism_threads
        others = [f.name for f, _ in cp.ListFields()
                  if f.name not in ("intra_op_parallelism_threads", "inter_op_parallelism_threads")]
        if others:
            log.warning("--tensorflow_session_config_file: only thread counts are applied; "
                        "ignored: %s", ",".join(others))
    intra, inter = thread_counts(flags, config_intra, config_inter)
    import tensorflow as tf

    if intra > 0:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter > 0:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    if intra > 0 or inter > 0:
        log.info("TensorFlow threads: intra_op=%d inter_op=%d (0: auto)", intra, inter)
    return intra, inter

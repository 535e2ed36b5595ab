"""--platform_config_file: TF Serving's PlatformConfigMap replaces the flags that
configure loading; its SessionBundleConfig's tags, warmup, TFLite and thread settings
apply; a model whose platform has no entry stops the start with TF Serving's error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from serving.modelserver.flags import parse_flags
from serving.modelserver.platform_config import (
    BundleOptions,
    bundle_options,
    inert_fields,
    parse_platform_config_map,
    session_bundle_config,
)
from serving.tfs_config import ConfigFileError

from .conftest import REPO
from .test_tflite import _half_plus_two

ADAPTER = "type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig"


def _platform_text(legacy: str, platform: str = "tensorflow") -> str:
    return (f'platform_configs {{\n  key: "{platform}"\n  value {{\n    source_adapter_config {{\n'
            f'      [{ADAPTER}] {{\n        legacy_config {{\n{legacy}        }}\n      }}\n'
            f'    }}\n  }}\n}}\n')


LEGACY = """          session_config { intra_op_parallelism_threads: 2 inter_op_parallelism_threads: 1
                           allow_soft_placement: true }
          batching_parameters { max_batch_size { value: 8 } batch_timeout_micros { value: 500 } }
          saved_model_tags: "serve"
          enable_model_warmup: true
          model_warmup_options { num_request_iterations { value: 3 } }
          prefer_tflite_model: true
          num_tflite_pools: 2
          num_tflite_interpreters_per_pool: 1
          enable_session_metadata: true
"""


def test_session_bundle_config_is_read_from_the_any():
    cfg = session_bundle_config(parse_platform_config_map(_platform_text(LEGACY)))
    opts = BundleOptions.from_session_bundle_config(cfg)
    assert opts.tags == ("serve",) and opts.enable_model_warmup and opts.warmup_iterations == 3
    assert opts.prefer_tflite_model and opts.num_tflite_pools == 2 and opts.num_tflite_interpreters_per_pool == 1
    assert (opts.intra_op_threads, opts.inter_op_threads) == (2, 1)
    assert opts.batching.max_batch_size.value == 8
    assert inert_fields(cfg) == ["enable_session_metadata", "session_config.allow_soft_placement"]
    # proto3 defaults: no tags → serve, warmup off unless enabled (TF Serving's reading)
    empty = BundleOptions.from_session_bundle_config(session_bundle_config(parse_platform_config_map(
        _platform_text(""))))
    assert empty.tags == ("serve",) and not empty.enable_model_warmup and empty.batching is None


def test_missing_entry_and_unsupported_platform_are_tf_serving_errors(tmp_path):
    with pytest.raises(ConfigFileError, match="PlatformConfigMap has no entry for platform tensorflow"):
        session_bundle_config(parse_platform_config_map(_platform_text("", platform="other")))
    path = tmp_path / "platform.config"
    path.write_text(_platform_text("", platform="other"))
    flags = parse_flags(["--model_base_path=/m", f"--platform_config_file={path}"])
    from serving.modelserver.server import initial_config

    with pytest.raises(ConfigFileError, match="^INVALID_ARGUMENT: Model default requests unsupported "
                                              "platform tensorflow$"):
        bundle_options(flags, initial_config(flags))


def test_bad_platform_file_fails_the_start_without_traceback(tmp_path):
    path = tmp_path / "platform.config"
    path.write_text(_platform_text("", platform="other"))
    proc = subprocess.run([sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1", "--port=0",
                           f"--grpc_socket_path={tmp_path / 's'}", "--model_base_path=/nowhere",
                           f"--platform_config_file={path}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 255 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "Failed to start server. Error: INVALID_ARGUMENT: Model default requests unsupported platform tensorflow")


def test_server_loads_as_the_platform_config_says(server_factory, tmp_path):
    (tmp_path / "half" / "1").mkdir(parents=True)
    _half_plus_two(tmp_path / "half" / "1")
    path = tmp_path / "platform.config"
    path.write_text(_platform_text(LEGACY))
    # --enable_batching with a missing parameters file would fail; here it is ignored
    server = server_factory([f"--model_base_path={tmp_path / 'half'}", "--model_name=half",
                             f"--platform_config_file={path}", "--enable_batching",
                             f"--batching_parameters_file={tmp_path / 'absent'}"])
    server.wait_available("half", 1)
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "half"
    resp = server.predict.GetModelMetadata(req, timeout=30)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigs)
    # served from model.tflite (prefer_tflite_model in the file): the generated signature
    assert sigs.signature_def["serving_default"].inputs["x"].name == "x"
    pr = predict_pb2.PredictRequest()
    pr.model_spec.name = "half"
    pr.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0], [4.0]], np.float32)))
    out = tf.make_ndarray(server.predict.Predict(pr, timeout=30).outputs["y"])
    assert out[:, 0].tolist() == [3.0, 4.0]
    log = server.log()
    assert "ignoring --enable_batching, --batching_parameters_file" in log
    assert "no effect in this server: enable_session_metadata, session_config.allow_soft_placement" in log
    assert "intra_op=2 inter_op=1" in log and "from model.tflite (2 pool(s)" in log

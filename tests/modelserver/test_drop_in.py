"""Issue 12: a true drop-in for tensorflow_model_server. Every TF Serving flag
parses; Predict answers in the typed value fields unless
--enable_serialization_as_tensor_content; zero-padded version directories load;
TF1 SavedModels serve; inputs go to the graph unchecked by rank rules of ours
(the quickstart request works); REST metadata prints default-valued fields; a
bad config file ends in TF Serving's error line; gRPC on a UNIX socket, the
standard health service, CORS and the method-name check."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.modelserver.flags import parse_flags
from serving.modelserver.policy import index_version_dirs, version_number
from serving.modelserver.tfs_flags import TFS_FLAGS

from .conftest import REPO
from .half_plus import ODD_METHOD, ODD_SIGNATURE, write_half_plus_three_tf1, write_half_plus_two

SAMPLE = {bool: "true", int: "3", float: "0.25", str: "x"}


# ---------------------------------------------------------------- flags


# tensorflow_model_server's flag list (model_servers/main.cc, TF Serving 2.x), written out
# here independently of serving/modelserver/tfs_flags.py: name -> value type.
MAIN_CC_FLAGS = {
    "port": int, "grpc_socket_path": str, "rest_api_port": int, "rest_api_num_threads": int,
    "rest_api_timeout_in_ms": int, "rest_api_enable_cors_support": bool, "enable_batching": bool,
    "allow_version_labels_for_unavailable_models": bool, "batching_parameters_file": str,
    "enable_per_model_batching_parameters": bool, "model_config_file": str,
    "model_config_file_poll_wait_seconds": int, "model_name": str, "model_base_path": str,
    "num_load_threads": int, "num_unload_threads": int, "max_num_load_retries": int,
    "load_retry_interval_micros": int, "file_system_poll_wait_seconds": int, "flush_filesystem_caches": bool,
    "tensorflow_session_parallelism": int, "tensorflow_session_config_file": str,
    "tensorflow_intra_op_parallelism": int, "tensorflow_inter_op_parallelism": int,
    "use_alts_credentials": bool, "ssl_config_file": str, "platform_config_file": str,
    "per_process_gpu_memory_fraction": float, "saved_model_tags": str, "grpc_channel_arguments": str,
    "grpc_max_threads": int, "enable_model_warmup": bool, "num_request_iterations_for_warmup": int,
    "version": bool, "monitoring_config_file": str, "remove_unused_fields_from_bundle_metagraph": bool,
    "prefer_tflite_model": bool, "num_tflite_pools": int, "num_tflite_interpreters_per_pool": int,
    "enable_signature_method_name_check": bool, "xla_cpu_compilation_enabled": bool,
    "xla_gpu_compilation_enabled": bool, "enable_profiler": bool, "thread_pool_factory_config_file": str,
    "mixed_precision": str, "skip_initialize_tpu": bool, "enable_grpc_healthcheck_service": bool,
    "enable_serialization_as_tensor_content": bool,
}


def test_main_cc_flags_are_all_accepted_with_their_types():
    assert len(MAIN_CC_FLAGS) == 48
    assert {f.name: f.kind for f in TFS_FLAGS} == MAIN_CC_FLAGS
    for name, kind in MAIN_CC_FLAGS.items():
        if name in ("use_alts_credentials", "version"):
            continue  # refused when set / answered before other checks: tested below
        flags = parse_flags(["--model_base_path=/m", f"--{name}={SAMPLE[kind]}"])
        assert getattr(flags, name) == (True if kind is bool else kind(SAMPLE[kind])), name
        if kind in (int, float):  # a value of the wrong type fails as TF Serving's parser does
            with pytest.raises(SystemExit) as e:
                parse_flags(["--model_base_path=/m", f"--{name}=abc"])
            assert e.value.code == 2, name


def test_every_tensorflow_model_server_flag_parses():
    assert len(TFS_FLAGS) == 48 and len({f.name for f in TFS_FLAGS}) == 48
    for f in TFS_FLAGS:
        if f.name in ("use_alts_credentials", "version"):
            continue  # refused when set / answered before other checks: tested below
        flags = parse_flags(["--model_base_path=/m", f"--{f.name}={SAMPLE[f.kind]}"])
        want = True if f.kind is bool else f.kind(SAMPLE[f.kind])
        assert getattr(flags, f.name) == want, f.name
    defaults = parse_flags(["--model_base_path=/m"])
    for f in TFS_FLAGS:
        if f.name != "model_base_path":
            assert getattr(defaults, f.name) == f.default, f.name
    assert defaults.grpc_socket_path == "" and defaults.enable_serialization_as_tensor_content is False
    assert defaults.load_retry_interval_micros == 60_000_000 and defaults.model_name == "default"


def test_unknown_flag_and_security_flags_fail_closed():
    with pytest.raises(SystemExit) as e:
        parse_flags(["--model_base_path=/m", "--no_such_flag=1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        parse_flags(["--model_base_path=/m", "--use_alts_credentials=true"])
    assert "not implemented" in str(e.value.code)
    # --ssl_config_file is applied (tests/modelserver/test_server_tls.py)
    assert parse_flags(["--model_base_path=/m", "--ssl_config_file=/etc/ssl.cfg"]).ssl_config_file == "/etc/ssl.cfg"


def _run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.modelserver.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_version_prints_and_exits_zero():
    proc = _run_main("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ") and lines[1] == f"TensorFlow Library: {tf.__version__}"


def test_bad_model_config_file_is_one_error_not_a_traceback(tmp_path):
    cfg = tmp_path / "models.config"
    cfg.write_text('model_config_list {\n  config { name: "m" base_pth: "/x" }\n}\n')
    proc = _run_main("--host=127.0.0.1", "--port=0", f"--grpc_socket_path={tmp_path / 's'}",
                     f"--model_config_file={cfg}")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:" in proc.stderr
    assert 'no field named "base_pth"' in proc.stderr
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{cfg}'" in proc.stderr


def test_a_model_that_fails_to_load_at_start_stops_the_server_like_tensorflow_model_server(tmp_path):
    """server_core / load_servables_fast: the first config's models must become available,
    else BuildAndStart fails and main returns -1 — no port is ever opened."""
    from .models import write_broken

    write_broken(tmp_path, "m", 3)
    sock = tmp_path / "s"
    proc = _run_main("--host=127.0.0.1", "--port=0", f"--grpc_socket_path={sock}", "--model_name=m",
                     f"--model_base_path={tmp_path / 'm'}", "--max_num_load_retries=1",
                     "--load_retry_interval_micros=200000")
    assert proc.returncode == 255, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not sock.exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
                           "{{{name: m version: 3} due to error: "), last
    assert last.endswith("}, }")
    assert proc.stderr.count("Loading servable: {name: m version: 3} failed") == 2  # the load and its one retry


def test_a_label_that_cannot_be_applied_at_start_stops_the_server(tmp_path):
    from serving import tfs_config

    from .models import write_model

    write_model(tmp_path, "m", 1)
    cfg = tmp_path / "models.config"
    tfs_config.write_text(tfs_config.build_model_server_config(
        [tfs_config.ModelEntry("m", str(tmp_path / "m"), versions=(1,), labels={"stable": 2})]), cfg)
    proc = _run_main("--host=127.0.0.1", "--port=0", f"--grpc_socket_path={tmp_path / 's'}",
                     f"--model_config_file={cfg}")
    assert proc.returncode == 255, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Failed to start server. Error: FAILED_PRECONDITION: ") and "version 2" in last, last


def test_version_directory_names():
    assert version_number("00000123") == 123 and version_number("7") == 7 and version_number("+8") == 8
    for name in ("-1", "x1", "1.5", ".tmp-3", "", "١٢", "99999999999999999999"):
        assert version_number(name) is None, name
    by_version, dups = index_version_dirs(["00000123", "123", "junk", "5"])
    assert by_version == {123: "123", 5: "5"} and dups == [(123, "123", "00000123")]


# ------------------------------------------------------------ served


@pytest.fixture(scope="module")
def quickstart_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("quickstart")
    write_half_plus_two(root, "00000123")
    (root / "half_plus_two" / "notaversion").mkdir()
    write_half_plus_three_tf1(root, 1)
    return root


@pytest.fixture(scope="module")
def quickstart_server(quickstart_root, tmp_path_factory):
    from .conftest import ServerProc

    cfg = tmp_path_factory.mktemp("cfg") / "models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{quickstart_root / n}" model_platform: "tensorflow" }}\n'
        for n in ("half_plus_two", "half_plus_three")) + "}\n")
    sock = tmp_path_factory.mktemp("sock") / "grpc.sock"
    server = ServerProc([
        f"--model_config_file={cfg}", f"--grpc_socket_path={sock}", "--enable_grpc_healthcheck_service",
        "--rest_api_enable_cors_support", "--rest_api_num_threads=2", "--num_load_threads=2",
        "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
        "--enable_signature_method_name_check", "--per_process_gpu_memory_fraction=0.5",
    ], tmp_path_factory.mktemp("logs") / "quickstart.log")
    server.sock = sock
    try:
        server.wait_available("half_plus_two", 123)
        server.wait_available("half_plus_three", 1)
        yield server
    finally:
        server.stop()


def _rest(server, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request(method, path, body=json.dumps(body) if body is not None else None)
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def _predict(name, x, signature=""):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
    return req


def test_quickstart_rest_predict_on_zero_padded_version(quickstart_server):
    status, headers, body = _rest(quickstart_server, "POST", "/v1/models/half_plus_two:predict",
                                  {"instances": [1.0, 2.0, 5.0]})
    assert status == 200, body
    assert json.loads(body) == {"predictions": [2.5, 3.0, 4.5]}
    assert headers.get("Access-Control-Allow-Origin") == "*"
    status, _, body = _rest(quickstart_server, "GET", "/v1/models/half_plus_two")
    assert json.loads(body)["model_version_status"][0]["version"] == "123"
    log = quickstart_server.log()
    assert "notaversion" in log and log.count("Skipping notaversion") == 1
    assert "--per_process_gpu_memory_fraction=0.5 has no effect" in log


def test_grpc_typed_fields_and_graph_decides_shapes(quickstart_server):
    resp = quickstart_server.predict.Predict(_predict("half_plus_two", [1.0]), timeout=30)  # [1] for [-1,1]
    out = resp.outputs["y"]
    assert out.tensor_content == b"" and list(out.float_val) == [2.5]
    assert [d.size for d in out.tensor_shape.dim] == [1] and resp.model_spec.version.value == 123
    x = np.random.default_rng(0).random((64, 1), dtype=np.float32)
    out = quickstart_server.predict.Predict(_predict("half_plus_two", x), timeout=30).outputs["y"]
    assert np.array_equal(np.asarray(out.float_val, np.float32).reshape(64, 1), 0.5 * x + 2.0)
    # rank 3 for a [-1,1] signature: the graph is elementwise, so TF Serving answers it too
    out = quickstart_server.predict.Predict(_predict("half_plus_two", [[[1.0, 2.0]]]), timeout=30).outputs["y"]
    assert [d.size for d in out.tensor_shape.dim] == [1, 1, 2] and list(out.float_val) == [2.5, 3.0]


def test_tf1_savedmodel_serves_and_method_name_check(quickstart_server):
    status, _, body = _rest(quickstart_server, "POST", "/v1/models/half_plus_three:predict",
                            {"instances": [[1.0], [2.0], [5.0]]})
    assert status == 200 and json.loads(body) == {"predictions": [[3.5], [4.0], [5.5]]}, body
    with pytest.raises(grpc.RpcError) as e:
        quickstart_server.predict.Predict(_predict("half_plus_three", [[1.0]], ODD_SIGNATURE), timeout=30)
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert e.value.details().endswith(f"}}. Was: {ODD_METHOD}")


def test_metadata_json_prints_default_valued_fields(quickstart_server):
    status, _, body = _rest(quickstart_server, "GET", "/v1/models/half_plus_two/metadata")
    assert status == 200, body
    sig = json.loads(body)["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["defaults"] == {} and sig["method_name"] == "tensorflow/serving/predict"
    shape = sig["inputs"]["x"]["tensor_shape"]
    assert shape["unknown_rank"] is False and shape["dim"] == [{"size": "-1", "name": ""},
                                                               {"size": "1", "name": ""}]


def test_unix_socket_and_health_service(quickstart_server):
    with grpc.insecure_channel(f"unix:{quickstart_server.sock}") as ch:
        out = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(
            _predict("half_plus_two", [[4.0]]), timeout=30).outputs["y"]
        assert list(out.float_val) == [4.0]
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_cors_preflight(quickstart_server):
    status, headers, _ = _rest(quickstart_server, "OPTIONS", "/v1/models/half_plus_two:predict")
    assert status == 204 and headers.get("Access-Control-Allow-Methods") == "GET, POST, OPTIONS"


def test_tensor_content_only_with_the_flag(quickstart_root, server_factory):
    server = server_factory(["--model_name=half_plus_two", f"--model_base_path={quickstart_root / 'half_plus_two'}",
                             "--enable_serialization_as_tensor_content=true"], rest=False)
    server.wait_available("half_plus_two", 123)
    x = np.array([[1.0], [2.0], [5.0]], np.float32)
    out = server.predict.Predict(_predict("half_plus_two", x), timeout=30).outputs["y"]
    assert len(out.float_val) == 0 and len(out.tensor_content) == 12
    assert np.array_equal(tf.make_ndarray(out), 0.5 * x + 2.0)


def test_demo_model_answers_in_typed_fields_unless_the_flag_is_set(tmp_path, server_factory):
    """The pipeline's own export (Keras 3 ExportArchive) as a TF Serving client reads it:
    outputs["probabilities"].float_val by default, tensor_content only with the flag."""
    from pipeline.model.demo import build_digits_cnn
    from pipeline.model.exporter import write_saved_model

    version_dir = tmp_path / "digits" / "1"
    write_saved_model(build_digits_cnn(5), version_dir, "inputs", "probabilities")
    x = np.random.default_rng(1).random((3, 8, 8, 1), dtype=np.float32)
    expected = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
        inputs=tf.constant(x))["probabilities"].numpy()
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
    for flag, typed in (([], True), (["--enable_serialization_as_tensor_content=true"], False)):
        server = server_factory(["--model_name=digits", f"--model_base_path={tmp_path / 'digits'}", *flag],
                                rest=False)
        server.wait_available("digits", 1)
        out = server.predict.Predict(req, timeout=30).outputs["probabilities"]
        assert [d.size for d in out.tensor_shape.dim] == [3, 5]
        if typed:
            assert out.tensor_content == b"" and len(out.float_val) == 15
            got = np.asarray(out.float_val, np.float32).reshape(3, 5)
        else:
            assert len(out.float_val) == 0 and len(out.tensor_content) == 15 * 4
            got = tf.make_ndarray(out)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        server.stop()


def test_rest_writes_float32_outputs_as_tf_serving_does(quickstart_server):
    """WriteDecimal: 0.5 * 0.2 + 2 in float32 is written 2.1 (six digits round-trip), not
    2.0999999046325684; 0.5/3 + 2 needs nine digits. Parsing gives back the model's float32."""
    x = np.array([[0.2], [1.0 / 3.0]], np.float32)
    status, _, body = _rest(quickstart_server, "POST", "/v1/models/half_plus_two:predict",
                            {"instances": x.tolist()})
    assert status == 200, body
    assert body.decode() == '{\n    "predictions": [[2.1], [2.16666675]\n    ]\n}'  # PrettyWriter layout
    got = np.asarray(json.loads(body)["predictions"], np.float32)
    assert np.array_equal(got, np.float32(0.5) * x + np.float32(2.0))

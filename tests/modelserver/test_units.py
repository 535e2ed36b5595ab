"""Pure cores, no server: version policy, label rules, tensor validation, REST codec,
config parsing, flags, batching scheduler."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import tfs_config
from serving.modelserver.batching import BatchOptions, BatchScheduler, batch_size_of
from serving.modelserver.errors import ServingError
from serving.modelserver.flags import parse_channel_arguments, parse_flags
from serving.modelserver.policy import (
    State,
    VersionPolicy,
    check_labels,
    parse_version_dirs,
    pick_latest,
    plan_loads,
    plan_unloads,
    resolve_label,
    select_versions,
)
from serving.modelserver.rest_codec import (
    decode_request,
    parse_body,
    request_format,
)
from serving.modelserver.rest_encode import encode_response
from serving.modelserver.tensors import (
    SignatureSpec,
    decode_inputs,
    ndarray_to_proto,
    proto_to_ndarray,
    select_outputs,
)
from tests.support.procs import wait_for

A, L, U, E = State.AVAILABLE, State.LOADING, State.UNLOADING, State.END


# ------------------------------------------------------------------ policy

def test_select_versions_per_policy():
    disk = [1, 3, 2, 7]
    assert select_versions(VersionPolicy(), disk) == {7}
    assert select_versions(VersionPolicy(num_versions=2), disk) == {3, 7}
    assert select_versions(VersionPolicy(kind="all"), disk) == {1, 2, 3, 7}
    assert select_versions(VersionPolicy(kind="specific", versions=frozenset({2, 9})), disk) == {2}
    assert select_versions(VersionPolicy(), []) == set()


def test_policy_from_proto_and_version_dirs():
    cfg = tfs_config.build_model_server_config([
        tfs_config.ModelEntry("a", "/m/a", versions=(1, 2)),
        tfs_config.ModelEntry("b", "/m/b", all_versions=True),
        tfs_config.ModelEntry("c", "/m/c", latest=3),
    ]).model_config_list.config
    assert VersionPolicy.from_proto(cfg[0].model_version_policy) == VersionPolicy("specific", 1, frozenset({1, 2}))
    assert VersionPolicy.from_proto(cfg[1].model_version_policy).kind == "all"
    assert VersionPolicy.from_proto(cfg[2].model_version_policy).num_versions == 3
    assert parse_version_dirs(["1", "02", "x", ".tmp-3", "10"]) == {1, 2, 10}


def test_loads_skip_active_and_blocked():
    assert plan_loads({1, 2, 3}, {1: A, 2: L}, blocked=set()) == (3,)
    assert plan_loads({1, 2}, {1: E}, blocked={1}) == (2,)


def test_unload_waits_for_a_desired_version_to_be_available():
    # availability-preserving: new version still loading (or failed) → keep the old one
    assert plan_unloads({2}, {1: A, 2: L}) == ()
    assert plan_unloads({2}, {1: A, 2: E}) == ()
    assert plan_unloads({2}, {1: A, 2: A}) == (1,)
    assert plan_unloads(set(), {1: A, 2: A}) == (1, 2)  # model removed: everything goes


def test_labels():
    assert resolve_label("m", {"canary": 2}, "canary") == 2
    with pytest.raises(ServingError) as e:
        resolve_label("m", {"canary": 2}, "stable")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.message == "Unrecognized servable version label: stable"
    err = check_labels("m", {"canary": 3}, available={1, 2}, allow_unavailable=False)
    assert err is not None and err.code == grpc.StatusCode.FAILED_PRECONDITION and "version 3" in err.message
    assert check_labels("m", {"canary": 3}, available={1}, allow_unavailable=True) is None
    assert pick_latest({1: A, 2: A, 3: L}) == 2 and pick_latest({3: L}) is None


# ----------------------------------------------------------------- tensors

def _spec(dims=(-1, 8, 8, 1), dtype=types_pb2.DT_FLOAT) -> SignatureSpec:
    sig = meta_graph_pb2.SignatureDef()
    info = sig.inputs["inputs"]
    info.name, info.dtype = "serving_default_inputs:0", dtype
    for d in dims:
        info.tensor_shape.dim.add(size=d)
    out = sig.outputs["probabilities"]
    out.name, out.dtype = "out:0", types_pb2.DT_FLOAT
    return SignatureSpec.from_signature_def("serving_default", sig)


def _err(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as e:
        fn(*args)
    return e.value


def test_proto_roundtrip_all_encodings():
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 8, 8, 1)
    assert np.array_equal(proto_to_ndarray("inputs", tf.make_tensor_proto(x)), x)  # tensor_content
    vals = tf.make_tensor_proto(x.ravel().tolist(), dtype=tf.float32, shape=x.shape)
    assert np.array_equal(proto_to_ndarray("inputs", vals), x)
    assert np.array_equal(proto_to_ndarray("inputs", ndarray_to_proto(x)), x)
    assert np.array_equal(tf.make_ndarray(ndarray_to_proto(x)), x)  # official decoder agrees


def test_input_checks_name_the_input():
    spec = _spec()
    good = tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32))
    assert decode_inputs(spec, {"inputs": good})["inputs"].shape == (1, 8, 8, 1)
    e = _err(decode_inputs, spec, {"images": good})
    assert e.message == ("input tensor alias not found in signature: images. "
                         "Inputs expected to be in the set {inputs}.")
    e = _err(decode_inputs, spec, {})
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and "Missing but required: {inputs}" in e.message
    # dtype and shape are the graph's to check (as in TF Serving): decoding keeps what was sent
    other = decode_inputs(spec, {"inputs": tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.int32))})
    assert other["inputs"].dtype == np.int32
    assert decode_inputs(spec, {"inputs": tf.make_tensor_proto(np.zeros((1, 8, 7), np.float32))}
                         )["inputs"].shape == (1, 8, 7)
    bad = tf.make_tensor_proto(np.zeros((1, 8, 8, 1), np.float32))
    bad.tensor_content = bad.tensor_content[:-4]
    assert "tensor parsing error: inputs" in _err(decode_inputs, spec, {"inputs": bad}).message


def test_output_filter():
    spec = _spec()
    assert select_outputs(spec, []) == ["probabilities"]
    e = _err(select_outputs, spec, ["logits"])
    assert e.message.startswith("output tensor alias not found in signature: logits")
    assert "duplicate" in _err(select_outputs, spec, ["probabilities", "probabilities"]).message


# -------------------------------------------------------------- REST codec

def test_rest_codec_row_and_columnar():
    spec = _spec()
    rows = np.zeros((2, 8, 8, 1)).tolist()
    doc = parse_body(b'{"instances": %s}' % str(rows).encode())
    assert request_format(doc) == ("", "instances")
    assert decode_request(spec, doc, "instances")["inputs"].dtype == np.float32
    doc = {"inputs": {"inputs": rows}}
    assert decode_request(spec, doc, "inputs")["inputs"].shape == (2, 8, 8, 1)
    out = {"probabilities": np.ones((2, 5), np.float32)}
    assert encode_response(out, "instances") == {"predictions": [[1.0] * 5] * 2}
    assert encode_response(out, "inputs") == {"outputs": [[1.0] * 5] * 2}


def test_rest_codec_errors():
    spec = _spec()
    assert _err(parse_body, b"{nope").message.startswith("JSON Parse error")
    assert _err(parse_body, b"[1]").code == grpc.StatusCode.INVALID_ARGUMENT
    assert _err(request_format, {}).message == "Missing 'inputs' or 'instances' key"
    assert "string" in _err(request_format, {"signature_name": 1, "inputs": 1}).message
    # json_tensor.cc FillTensorMapFromInstancesList / AddInstanceItem / AddValueToTensor texts
    assert _err(decode_request, spec, {"instances": [[1, 2], [3]]}, "instances").message == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 "
        "but got: 1")
    assert "Type: String is not of expected type: float" in _err(
        decode_request, spec, {"instances": ["a"]}, "instances").message
    assert decode_request(spec, {"instances": [1.0]}, "instances")["inputs"].shape == (1,)


# ------------------------------------------------------------ config/flags

def test_tfs_config_roundtrip(tmp_path):
    cfg = tfs_config.build_model_server_config(
        [tfs_config.ModelEntry("m", "/models/m", versions=(1, 2), labels={"stable": 1, "canary": 2})])
    path = tfs_config.write_text(cfg, tmp_path / "models.config")
    again = tfs_config.read_model_server_config(path)
    assert again == cfg and dict(again.model_config_list.config[0].version_labels) == {"stable": 1, "canary": 2}
    bp = tfs_config.parse_batching_parameters(tfs_config.to_text(tfs_config.build_batching_parameters(16, 500)))
    assert BatchOptions.from_proto(bp).max_batch_size == 16
    assert BatchOptions.from_proto(bp).batch_timeout_micros == 500
    mc = tfs_config.parse_monitoring_config('prometheus_config { enable: true path: "/m" }')
    assert mc.prometheus_config.path == "/m"
    with pytest.raises(text_format.ParseError):
        tfs_config.parse_batching_parameters("max_batch_size: {value: }")


def test_flags_match_tf_serving_spelling():
    f = parse_flags(["--port=9000", "--model_base_path=/m", "--enable_batching",
                     "--enable_model_warmup=false", "--rest_api_port", "8501"])
    assert (f.port, f.rest_api_port, f.enable_batching, f.enable_model_warmup) == (9000, 8501, True, False)
    assert f.model_name == "default" and f.file_system_poll_wait_seconds == 1
    with pytest.raises(SystemExit):
        parse_flags(["--port=9000"])
    assert parse_channel_arguments("grpc.max_receive_message_length=10,x=y") == [
        ("grpc.max_receive_message_length", 10), ("x", "y")]


# ---------------------------------------------------------------- batching

def test_batch_scheduler_merges_and_splits():
    calls = []

    def runner(inputs):
        calls.append(inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}

    sched = BatchScheduler(runner, BatchOptions(max_batch_size=8, batch_timeout_micros=50_000,
                                                num_batch_threads=1))
    results = {}

    def client(i):
        results[i] = sched.submit({"x": np.full((1, 3), i, np.float32)})["y"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sched.close()
    assert all(np.array_equal(results[i], np.full((1, 3), 2 * i, np.float32)) for i in range(8))
    assert max(calls) > 1 and sum(calls) == 8  # merged, every row once
    with pytest.raises(ServingError):
        batch_size_of({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
    sched2 = BatchScheduler(runner, BatchOptions(max_batch_size=2, num_batch_threads=1))
    assert "larger than maximum" in _err(sched2.submit, {"x": np.zeros((3, 1))}).message
    sched2.close()


def test_batch_scheduler_timeouts_queued_dropped_running_deadline():
    release = threading.Event()
    ran = []

    def runner(inputs):
        ran.append(float(inputs["x"][0, 0]))
        if inputs["x"][0, 0] == 1:
            release.wait(10)  # the first batch holds the only worker
        return {"y": inputs["x"]}

    sched = BatchScheduler(runner, BatchOptions(max_batch_size=1, num_batch_threads=1))
    errors = {}

    def running():
        errors["running"] = _err(sched.submit, {"x": np.full((1, 1), 1, np.float32)}, 0.3)

    first = threading.Thread(target=running)
    first.start()
    assert wait_for(lambda: ran == [1.0], 10)
    queued = _err(sched.submit, {"x": np.full((1, 1), 2, np.float32)}, 0.1)
    assert (queued.code, queued.message) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Run() timeout exceeded while waiting in batching queue")
    first.join()
    assert (errors["running"].code, errors["running"].message) == (
        grpc.StatusCode.DEADLINE_EXCEEDED, "Timed out waiting for notification")
    release.set()
    out = sched.submit({"x": np.full((1, 1), 3, np.float32)}, 5.0)["y"]
    assert out.tolist() == [[3.0]]
    assert ran == [1.0, 3.0]  # the request dropped in the queue never ran
    sched.close()


def test_batch_scheduler_with_two_workers_loses_nothing():
    # regression: a worker waiting on the timeout while the other drained the queue
    # used to wake up with an empty batch and die, leaving later requests hanging
    sched = BatchScheduler(lambda a: {"y": a["x"] + 1}, BatchOptions(
        max_batch_size=4, batch_timeout_micros=500, num_batch_threads=2))
    bad = []

    def client(i):
        for j in range(40):
            out = sched.submit({"x": np.full((1, 1), i * 100 + j, np.float32)})["y"]
            if out[0, 0] != i * 100 + j + 1:
                bad.append((i, j, out))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "requests hung"
    assert bad == []
    assert all(t.is_alive() for t in sched._threads), "a batch worker died"
    sched.close()


def test_bulk_float32_json_values_equal_write_decimal_value_by_value():
    """The vectorised REST path must give, for every float32, the double that TF Serving's
    WriteDecimal text parses to: random values in [0, 1), every magnitude, random bit
    patterns (NaN, Inf, subnormals), decimal ties, and powers of ten near the exponent edges."""
    import math

    from serving.modelserver.example_json import write_decimal
    from serving.modelserver.rest_encode import decimal_doubles

    rng = np.random.default_rng(7)
    bits = np.frombuffer(rng.integers(0, 2**32, 20_000, dtype=np.uint32).tobytes(), np.float32)
    wide = (rng.standard_normal(20_000) * 10.0 ** rng.integers(-40, 39, 20_000)).astype(np.float32)
    ties = (np.round(rng.random(20_000) * 10.0 ** rng.integers(1, 8, 20_000))
            / 10.0 ** rng.integers(0, 9, 20_000)).astype(np.float32)
    edges = np.array([0.0, -0.0, 0.1, 0.5, 2.1, 1e6, 999999.5, 9999995.0, 1e-5, 1e-7, 1e-8, 123456.5, 0.1234565,
                      3.4e38, 1e-45, -1.0, 100.0, 1e-4, 9.999995e-5] + [10.0 ** k for k in range(-12, 13)],
                     np.float32)
    values = np.concatenate([rng.random(20_000, dtype=np.float32), wide, bits, ties, edges])
    values = np.pad(values, (0, -len(values) % 10)).reshape(-1, 10)  # any shape: a 2-D batch here
    with np.errstate(invalid="ignore"):
        got = decimal_doubles(values).ravel()
    want = [float(write_decimal(float(v), True)) for v in values.ravel()]
    mismatches = [(float(v), g, w) for v, g, w in zip(values.ravel(), got, want, strict=True)
                  if not (g == w and math.copysign(1, g) == math.copysign(1, w)) and not (math.isnan(g) and math.isnan(w))]
    assert decimal_doubles(values).shape == values.shape
    assert mismatches == []

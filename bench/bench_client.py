"""serving.client vs the official tensorflow-serving-api path, side by side in one run.

Measures (1) import time and RSS in fresh subprocesses, (2) encode/decode of a
(64,224,224,3) float32 tensor vs tf.make_tensor_proto / tf.make_ndarray, and
(3) end-to-end batch-1 Predict latency against the same server (the project's
model server when it starts, else the test suite's fake TF Serving).

    python bench/bench_client.py --out bench/results/client.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IMPORT_PROBE = """
import json, resource, sys, time
t = time.perf_counter()
{stmt}
took = time.perf_counter() - t
rss_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(json.dumps({{"seconds": took, "rss_mb": rss_kb / 1024,
                  "tf_python": "tensorflow.python" in sys.modules}}))
"""
OURS_IMPORT = "import numpy, serving.client\nfrom serving.client import PredictionClient"
OFFICIAL_IMPORT = ("import numpy, grpc\nfrom tensorflow_serving.apis import predict_pb2, "
                   "prediction_service_pb2_grpc\nimport tensorflow as tf")


def probe_import(stmt: str, runs: int) -> dict[str, float]:
    """Median import time and RSS over `runs` fresh interpreters."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    samples = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(stmt=stmt)], env=env,
                              capture_output=True, text=True, timeout=120, check=True)
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"seconds": round(statistics.median(s["seconds"] for s in samples), 4),
            "rss_mb": round(statistics.median(s["rss_mb"] for s in samples), 1),
            "tensorflow_python_loaded": any(s["tf_python"] for s in samples)}


def best_of(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_codec(runs: int) -> dict[str, float]:
    """Encode, decode of a parsed message, and decode straight from wire bytes (what the client does)."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    from serving.client import codec, fastwire
    from serving.client._generated import tfrollout_wire_pb2 as wire

    x = np.random.default_rng(0).standard_normal((64, 224, 224, 3)).astype(np.float32)
    data = codec.encode(x).SerializeToString()
    ours_msg = wire.Tensor.FromString(data)
    official_msg = tensor_pb2.TensorProto.FromString(data)
    assert np.array_equal(codec.decode(ours_msg), tf.make_ndarray(official_msg))
    assert np.array_equal(fastwire.decode_tensor(data), x)
    result = {
        "encode_ours_ms": best_of(lambda: codec.encode(x), runs) * 1e3,
        "encode_tf_ms": best_of(lambda: tf.make_tensor_proto(x), runs) * 1e3,
        "decode_ours_ms": best_of(lambda: codec.decode(ours_msg), runs) * 1e3,
        "decode_tf_ms": best_of(lambda: tf.make_ndarray(official_msg), runs) * 1e3,
        "parse_decode_ours_ms": best_of(lambda: fastwire.decode_tensor(data), runs) * 1e3,
        "parse_decode_tf_ms": best_of(
            lambda: tf.make_ndarray(tensor_pb2.TensorProto.FromString(data)), runs) * 1e3,
    }
    return {k: round(v, 3) for k, v in result.items()}


def build_model(path: Path) -> None:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Demo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((64, 5)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="inputs")])
        def serve(self, inputs):
            return {"probabilities": tf.nn.softmax(tf.matmul(tf.reshape(inputs, [-1, 64]), self.w))}

    module = Demo()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def start_server(base: Path, port: int) -> tuple[subprocess.Popen, str]:
    """The project's model server if it comes up, else the fake TF Serving from the tests."""
    from serving.client import PredictionClient
    from tests.support.procs import free_port, stop_process

    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    candidates = [
        ("serving.modelserver", [sys.executable, "-m", "serving.modelserver.main", "--port", str(port),
                                 "--rest_api_port", "0", "--host", "127.0.0.1", "--model_name", "demo",
                                 "--model_base_path", str(base)]),
        ("tests/client/fake_tfs.py", [sys.executable, str(REPO / "tests/client/fake_tfs.py"),
                                      "--port", str(port), "--model_name", "demo",
                                      "--model_base_path", str(base)]),
    ]
    for name, cmd in candidates:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with PredictionClient(f"127.0.0.1:{port}", deadline=5) as client:
                client.wait_until_available("demo", version=1, deadline=90)
            return proc, name
        except Exception as exc:  # noqa: BLE001 - try the next server
            print(f"  {name} did not come up ({exc}); trying the next server", file=sys.stderr)
            stop_process(proc)
            port = free_port()
    raise SystemExit("no server could be started")


def bench_latency(target: str, requests: int) -> dict[str, float]:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.client import PredictionClient

    x = np.random.default_rng(1).random((1, 8, 8, 1), dtype=np.float32)
    ours = PredictionClient(target, deadline=10)
    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def official_call() -> np.ndarray:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "demo"
        req.model_spec.signature_name = "serving_default"
        req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
        return tf.make_ndarray(stub.Predict(req, timeout=10).outputs["probabilities"])

    def ours_call() -> np.ndarray:
        return ours.predict("demo", {"inputs": x})["probabilities"]

    np.testing.assert_allclose(ours_call(), official_call(), atol=1e-6)
    lat = {"ours": [], "official": []}
    for _ in range(20):  # warm both paths
        ours_call()
        official_call()
    for _ in range(requests // 50):  # interleave blocks so drift hits both equally
        for name, fn in (("ours", ours_call), ("official", official_call)):
            for _ in range(50):
                start = time.perf_counter()
                fn()
                lat[name].append(time.perf_counter() - start)
    ours.close()
    channel.close()
    out = {}
    for name, values in lat.items():
        arr = np.asarray(values) * 1e3
        out[f"{name}_p50_ms"] = round(float(np.percentile(arr, 50)), 3)
        out[f"{name}_p99_ms"] = round(float(np.percentile(arr, 99)), 3)
    out["requests_each"] = len(lat["ours"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/client.json")
    parser.add_argument("--import-runs", type=int, default=3)
    parser.add_argument("--codec-runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    started = time.perf_counter()

    print("import time / RSS (fresh interpreters)...", flush=True)
    ours_imp = probe_import(OURS_IMPORT, args.import_runs)
    official_imp = probe_import(OFFICIAL_IMPORT, args.import_runs)
    print("encode / decode (64,224,224,3) float32...", flush=True)
    codec_res = bench_codec(args.codec_runs)

    from tests.support.procs import free_port, stop_process

    print("end-to-end batch-1 latency...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "demo"
        build_model(base / "1")
        proc, server = start_server(base, free_port())
        try:
            target = f"127.0.0.1:{_port_of(proc)}"
            latency = bench_latency(target, args.requests)
        finally:
            stop_process(proc)

    ratios = {
        "import_time_speedup": round(official_imp["seconds"] / ours_imp["seconds"], 2),
        "import_rss_ratio": round(official_imp["rss_mb"] / ours_imp["rss_mb"], 2),
        "encode_speedup": round(codec_res["encode_tf_ms"] / codec_res["encode_ours_ms"], 2),
        "decode_parsed_message_speedup": round(codec_res["decode_tf_ms"] / codec_res["decode_ours_ms"], 2),
        "decode_speedup": round(codec_res["parse_decode_tf_ms"] / codec_res["parse_decode_ours_ms"], 2),
        "latency_p50_ratio_official_over_ours": round(latency["official_p50_ms"] / latency["ours_p50_ms"], 2),
    }
    goals = {
        "import_time_le_0.3s": ours_imp["seconds"] <= 0.3,
        "import_rss_le_80mb": ours_imp["rss_mb"] <= 80,
        "decode_ge_2.5x": ratios["decode_speedup"] >= 2.5,  # from wire bytes, as the client decodes
        "no_tensorflow_python": not ours_imp["tensorflow_python_loaded"],
    }
    result = {"import": {"ours": ours_imp, "official": official_imp}, "codec": codec_res,
              "latency": {"server": server, **latency}, "ratios": ratios, "goals": goals,
              "python": sys.version.split()[0], "cpus": os.cpu_count(),
              "wall_s": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"import: ours {ours_imp['seconds']:.3f} s / {ours_imp['rss_mb']:.0f} MB vs official "
          f"{official_imp['seconds']:.3f} s / {official_imp['rss_mb']:.0f} MB")
    print(f"codec: encode {codec_res['encode_ours_ms']:.1f} vs {codec_res['encode_tf_ms']:.1f} ms, "
          f"decode (parsed message) {codec_res['decode_ours_ms']:.2f} vs {codec_res['decode_tf_ms']:.1f} ms, "
          f"decode from wire bytes {codec_res['parse_decode_ours_ms']:.3f} vs {codec_res['parse_decode_tf_ms']:.1f} ms")
    print(f"latency batch-1 p50 ({server}): ours {latency['ours_p50_ms']} ms vs official "
          f"{latency['official_p50_ms']} ms")
    for key, value in ratios.items():
        print(f"  {key}: {value}x")
    print(f"goals: {goals}; wrote {args.out} in {result['wall_s']} s")
    return 0


def _port_of(proc: subprocess.Popen) -> int:
    args = proc.args
    return int(args[args.index("--port") + 1])


if __name__ == "__main__":
    sys.exit(main())

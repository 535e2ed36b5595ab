"""Benchmark the model server against its floor, in one run.

Floor: calling the loaded SavedModel signature in-process. Server: a real
`serving.modelserver` process on 127.0.0.1, called with the official
tensorflow-serving-api stubs. Reports gRPC p50/p99 at batch 1 and 64, throughput
at 16 concurrent clients (batching off and on), and the ratios against the goals:
  * batch-1 p50 overhead over the floor ≤ 0.3 ms
  * with batching on, 16-client throughput ≥ 0.7 × in-process batched throughput

    python bench/bench_modelserver.py --out bench/results/modelserver.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from serving import tfs_config  # noqa: E402

MODEL = "demo"
SHAPE = (8, 8, 1)
CLIENTS = 16
MAX_BATCH = 16


def write_demo_model(root: Path) -> Path:
    """Demo-shaped model: `inputs` [-1,8,8,1] → `probabilities` [-1,5], small CNN."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input(SHAPE, name="inputs")
    h = tf.keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    h = tf.keras.layers.Flatten()(h)
    h = tf.keras.layers.Dense(32, activation="relu")(h)
    out = tf.keras.layers.Dense(5, activation="softmax")(h)
    model = tf.keras.Model(inputs, out)

    class Export(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, *SHAPE], tf.float32, name="inputs")])
        def serve(self, inputs):
            return {"probabilities": self.model(inputs, training=False)}

    module = Export()
    path = root / MODEL / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, q))


def timed(fn, n: int, warm: int = 30) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# ------------------------------------------------------------------ floor

def in_process(version_dir: Path, n: int, seconds: float) -> dict:
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    res = {}
    for batch in (1, 64):
        x = np.random.default_rng(batch).random((batch, *SHAPE), dtype=np.float32)
        lat = timed(lambda x=x: fn(inputs=tf.constant(x))["probabilities"].numpy(), n)
        res[f"batch{batch}"] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
    x = np.random.default_rng(0).random((MAX_BATCH, *SHAPE), dtype=np.float32)
    timed(lambda: fn(inputs=tf.constant(x))["probabilities"].numpy(), 20)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(inputs=tf.constant(x))["probabilities"].numpy()
        calls += 1
    res[f"batched{MAX_BATCH}_rows_per_s"] = calls * MAX_BATCH / (time.perf_counter() - start)
    res["scheduler_16_threads_rows_per_s"] = in_process_scheduler(fn, seconds)
    return res


def in_process_scheduler(fn, seconds: float, batch_timeout_micros: int = 2000) -> float:
    """16 in-process threads (batch 1) through the server's own BatchScheduler: the
    batched floor without any RPC (isolates what gRPC costs when batching)."""
    import threading

    from serving.modelserver.batching import BatchOptions, BatchScheduler

    sched = BatchScheduler(lambda a: {k: v.numpy() for k, v in fn(**{n: tf.constant(t) for n, t in a.items()}).items()},
                           BatchOptions(max_batch_size=MAX_BATCH, batch_timeout_micros=batch_timeout_micros,
                                        num_batch_threads=2))
    x = np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)
    stop = time.perf_counter() + seconds
    counts = [0] * CLIENTS

    def client(i):
        while time.perf_counter() < stop:
            sched.submit({"inputs": x})
            counts[i] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    sched.close()
    return sum(counts) / elapsed


# ----------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: Path, extra: list[str], log: Path, repo: Path = REPO):
        self.port = free_port()
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1", f"--port={self.port}",
             f"--model_name={MODEL}", f"--model_base_path={base / MODEL}", *extra],
            cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, stdout=self.log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        status = model_service_pb2_grpc.ModelServiceStub(self.channel)
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = MODEL
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited; see {log}")
            try:
                if any(s.state == 30 for s in status.GetModelStatus(req, timeout=2).model_version_status):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"server not ready; see {log}")

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()  # by pid: SIGTERM → graceful stop
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


ECHO_SERVER = """
import sys, grpc
from concurrent import futures
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        return predict_pb2.PredictResponse()
server = grpc.server(futures.ThreadPoolExecutor(16), options=[("grpc.so_reuseport", 0)])
prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
server.add_insecure_port("127.0.0.1:" + sys.argv[1]); server.start(); server.wait_for_termination()
"""


def grpc_echo_latency(n: int) -> dict:
    """Python gRPC transport alone (empty handler, separate process): the part of the
    overhead no model-server code can remove."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=60)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            req = request(1)
            lat = timed(lambda: stub.Predict(req, timeout=30), n)
        return {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
    finally:
        proc.terminate()
        proc.wait(30)


def request(batch: int) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = MODEL
    x = np.random.default_rng(batch).random((batch, *SHAPE), dtype=np.float32)
    req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
    return req


def grpc_latency(server: Server, n: int) -> dict:
    res = {}
    for batch in (1, 64):
        req = request(batch)
        lat = timed(lambda req=req: server.stub.Predict(req, timeout=30), n)
        res[f"batch{batch}"] = {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
    return res


def rest_latency(port: int, n: int) -> dict:
    """Batch-1 `:predict` over one keep-alive HTTP connection (as a REST client library
    would hold it): the server's own write pattern decides the latency (Nagle's algorithm
    against the client's delayed ACK added 40 ms per request)."""
    import http.client

    body = json.dumps({"instances": np.zeros((1, *SHAPE)).tolist()}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call() -> None:
        conn.request("POST", f"/v1/models/{MODEL}:predict", body=body)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"REST predict answered {resp.status}")
    try:
        lat = timed(call, n)
    finally:
        conn.close()
    return {"batch1": {"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}}


def grpc_throughput(port: int, seconds: float, clients: int = CLIENTS) -> dict:
    """`clients` concurrent callers (asyncio tasks on one aio channel), batch 1."""
    req = request(1)

    async def run() -> tuple[int, int, float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for _ in range(20):
                await stub.Predict(req, timeout=30)
            done = errors = 0
            stop = time.perf_counter() + seconds

            async def client():
                nonlocal done, errors
                while time.perf_counter() < stop:
                    try:
                        await stub.Predict(req, timeout=30)
                        done += 1
                    except grpc.RpcError:
                        errors += 1

            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            return done, errors, time.perf_counter() - start

    done, errors, elapsed = asyncio.run(run())
    return {"clients": clients, "requests_per_s": done / elapsed, "errors": errors}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/modelserver.json")
    p.add_argument("--n", type=int, default=400, help="latency samples per point")
    p.add_argument("--seconds", type=float, default=6.0, help="duration of each throughput run")
    p.add_argument("--batch-timeout-micros", type=int, default=2000)
    p.add_argument("--before-repo", type=Path, default=None,
                   help="also measure batch-1/64 latency of the server in this tree (e.g. a "
                        "`git archive` of an earlier commit), in the same run")
    args = p.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ms-") as tmp:
        root = Path(tmp)
        version_dir = write_demo_model(root)
        floor = in_process(version_dir, args.n, args.seconds)
        echo = grpc_echo_latency(args.n)

        rest_port = free_port()
        server = Server(root, [f"--rest_api_port={rest_port}"], root / "server.log")
        try:
            lat = grpc_latency(server, args.n)
            rest = rest_latency(rest_port, args.n)
            plain = grpc_throughput(server.port, args.seconds)
        finally:
            server.stop()
        # response encoding: typed *_val fields (TF Serving's default, above) vs tensor_content
        server = Server(root, ["--enable_serialization_as_tensor_content=true"], root / "server-tc.log")
        try:
            lat_tc = grpc_latency(server, args.n)
        finally:
            server.stop()
        lat_before = None
        if args.before_repo:
            server = Server(root, [], root / "server-before.log", repo=args.before_repo.resolve())
            try:
                lat_before = grpc_latency(server, args.n)
            finally:
                server.stop()

        params = tfs_config.write_text(tfs_config.build_batching_parameters(
            max_batch_size=MAX_BATCH, batch_timeout_micros=args.batch_timeout_micros, num_batch_threads=2),
            root / "batching.config")
        server = Server(root, ["--enable_batching", f"--batching_parameters_file={params}"],
                        root / "server-batching.log")
        try:
            batched = grpc_throughput(server.port, args.seconds)
        finally:
            server.stop()

    overhead = lat["batch1"]["p50_ms"] - floor["batch1"]["p50_ms"]
    ratio = batched["requests_per_s"] / floor[f"batched{MAX_BATCH}_rows_per_s"]
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "tf": tf.__version__},
        "in_process": floor,
        "grpc_echo_batch1_no_model": echo,
        "grpc_tensor_content": lat_tc,
        "grpc_before": lat_before,
        "rest_keepalive": rest,
        "grpc": {**lat, "throughput_16_clients": plain, "throughput_16_clients_batching": batched,
                 "batching": {"max_batch_size": MAX_BATCH, "batch_timeout_micros": args.batch_timeout_micros}},
        "ratios": {
            "batch1_p50_overhead_ms": overhead,
            "batch1_p50_overhead_of_grpc_transport_alone_ms": echo["p50_ms"],
            "batch64_p50_overhead_ms": lat["batch64"]["p50_ms"] - floor["batch64"]["p50_ms"],
            "batching_throughput_vs_in_process_batched": ratio,
            "batching_throughput_vs_in_process_scheduler_16_threads":
                batched["requests_per_s"] / floor["scheduler_16_threads_rows_per_s"],
        },
        "goals": {
            "batch1_p50_overhead_ms_max": 0.3, "batch1_met": overhead <= 0.3,
            "batching_throughput_ratio_min": 0.7, "batching_met": ratio >= 0.7,
        },
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    f, g = floor, lat
    print(f"{'':28s}{'in-process':>12s}{'gRPC':>12s}")
    for b in (1, 64):
        for q in ("p50_ms", "p99_ms"):
            print(f"batch {b:<3d} {q:<18s}{f[f'batch{b}'][q]:12.3f}{g[f'batch{b}'][q]:12.3f}")
    for b in (1, 64):
        extra = f"  before {lat_before[f'batch{b}']['p50_ms']:.3f}" if lat_before else ""
        print(f"batch {b:<3d} p50 typed fields {g[f'batch{b}']['p50_ms']:.3f}  "
              f"tensor_content {lat_tc[f'batch{b}']['p50_ms']:.3f}{extra}")
    print(f"gRPC echo (no model) p50    {'':12s}{echo['p50_ms']:12.3f}")
    print(f"REST batch 1 p50 (keep-alive){'':11s}{rest['batch1']['p50_ms']:12.3f}")
    print(f"16 clients, batching off    {'':12s}{plain['requests_per_s']:12.0f} req/s")
    print(f"16 clients, batching on     {f[f'batched{MAX_BATCH}_rows_per_s']:12.0f}{batched['requests_per_s']:12.0f} rows/s")
    print(f"16 threads via BatchScheduler {floor['scheduler_16_threads_rows_per_s']:10.0f} rows/s (in-process, no RPC)")
    print(f"batch-1 p50 overhead: {overhead:.3f} ms (goal ≤ 0.3)  "
          f"batched throughput ratio: {ratio:.2f} (goal ≥ 0.7)  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

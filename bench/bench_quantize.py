"""export.quantize side by side: none vs float16 vs int8, for the digits demo and a
model with large Dense layers. For each: SavedModel variables bytes, held-out
accuracy, in-process latency and served latency (the project's model server over
gRPC, batch 1 and 64), all in one run.

    python bench/bench_quantize.py --out bench/results/quantize.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from common import parse_out, write_results  # noqa: E402

from pipeline.model.data import Dataset, load_digits_arrays, split_dataset  # noqa: E402

MODES = ("none", "float16", "int8")


def digits(seed: int = 0) -> Dataset:
    x, y = load_digits_arrays()
    return split_dataset(x, y, tuple("0123456789"), 0.3, seed)


def dense_heavy(data: Dataset):
    """64 -> 2048 -> 2048 -> 10 MLP (≈4.3 M weights, 17 MB float32): Dense dominates."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(data.x_train.shape[1:], name="inputs")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(2048, activation="relu", name="wide_1")(x)
    x = keras.layers.Dense(2048, activation="relu", name="wide_2")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="head_output")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=8, batch_size=64, verbose=0)
    return model


def demo_cnn(data: Dataset):
    import keras

    from pipeline.model.demo import build_digits_cnn

    keras.utils.set_random_seed(0)
    model = build_digits_cnn(10)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=15, batch_size=32, verbose=0)
    return model


def export_all(model, name: str, root: Path, data: Dataset) -> dict[str, dict]:
    from pipeline.model.exporter import ExportSpec, export_model

    out = {}
    for version, mode in enumerate(MODES, start=1):
        spec = ExportSpec(root=root, model_name=name, version=version, input_name="inputs",
                          output_name="probabilities", warmup_records=0, golden_size=8, parity_atol=1e-5)
        result = export_model(model, spec, data.x_test, {}, quantize=mode, heldout_y=data.y_test)
        manifest = json.loads((result.version_dir / "tfrollout.json").read_text())
        out[mode] = {"version": version, "quantization": manifest["quantization"],
                     "variables_bytes": sum(p.stat().st_size for p in (result.version_dir / "variables").rglob("*")
                                            if p.is_file())}
    return out


def served_latency(root: Path, names: list[str], exported: dict[str, dict[str, dict]], x: np.ndarray,
                   n: int = 200) -> None:
    """p50 gRPC latency per model and version, measured against one server process."""
    import socket

    from serving import tfs_config
    from serving.client import PredictionClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tfs_config.write_text(tfs_config.build_model_server_config(
        [tfs_config.ModelEntry(name, str(root / name), all_versions=True) for name in names]),
        root / "models.config")
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "serving.modelserver.main", "--host=127.0.0.1",
                             f"--port={port}", f"--model_config_file={config}"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        with PredictionClient(f"127.0.0.1:{port}", deadline=30.0) as client:
            for name in names:
                for row in exported[name].values():
                    deadline = time.monotonic() + 120
                    while True:
                        try:
                            client.predict(name, {"inputs": x[:1]}, version=row["version"])
                            break
                        except Exception:
                            if proc.poll() is not None or time.monotonic() > deadline:
                                raise SystemExit(f"model server not ready; see {root / 'server.log'}") from None
                            time.sleep(0.3)
                    for batch in (1, 64):
                        rows = np.resize(x, (batch, *x.shape[1:])).astype(np.float32)
                        times = []
                        for i in range(n + 10):
                            t0 = time.perf_counter()
                            client.predict(name, {"inputs": rows}, version=row["version"])
                            if i >= 10:
                                times.append(time.perf_counter() - t0)
                        row.setdefault("served_p50_ms", {})[f"batch{batch}"] = statistics.median(times) * 1e3
    finally:
        proc.terminate()  # by pid: SIGTERM → graceful stop
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def summary(rows: dict[str, dict]) -> dict[str, dict]:
    base = rows["none"]
    out = {}
    for mode, row in rows.items():
        q = row["quantization"]
        entry = {"variables_bytes": row["variables_bytes"],
                 "bytes_ratio_vs_float32": row["variables_bytes"] / base["variables_bytes"],
                 "served_p50_ms": row.get("served_p50_ms")}
        if mode != "none":
            entry.update({"layers_changed": q["layers_changed"], "accuracy": q["accuracy"],
                          "latency_in_process": q["latency_in_process"]})
        if row.get("served_p50_ms") and base.get("served_p50_ms"):
            entry["served_ratio_vs_float32"] = {b: row["served_p50_ms"][b] / base["served_p50_ms"][b]
                                                for b in row["served_p50_ms"]}
        out[mode] = entry
    return out


def main() -> None:
    out = parse_out(__doc__.splitlines()[0])
    data = digits()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exported = {"demo_cnn": export_all(demo_cnn(data), "demo_cnn", root, data),
                    "dense_4m": export_all(dense_heavy(data), "dense_4m", root, data)}
        served_latency(root, list(exported), exported, data.x_test)
    write_results(out, "quantize", {name: summary(rows) for name, rows in exported.items()})


if __name__ == "__main__":
    main()

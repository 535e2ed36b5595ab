"""oneDNN on vs off for the model server's run path (issue 22, item 1), in one run.

TensorFlow's oneDNN kernels abort the whole process (a failed CHECK) on some inputs
the plain kernels answer with INVALID_ARGUMENT, e.g. a rank-1 input to a Conv2D.
The server therefore starts TensorFlow with TF_ENABLE_ONEDNN_OPTS=0 (main.py); this
benchmark measures what that costs: the demo digits CNN (pipeline/model/demo.py,
exported as the pipeline exports it) and a MobileNetV2 (random init, 224×224×3),
batch 1 and batch 64, each run through `SavedModelServable.run` (the server's own
session path) in child processes started with TF_ENABLE_ONEDNN_OPTS=0 and =1,
alternating, so both settings see the same machine load.

    python bench/bench_onednn.py --out bench/results/onednn.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (model, batch) → timed calls per child run; MobileNetV2 batch 64 takes ~1 s a call on 2 cores
REPS = {("cnn", 1): 300, ("cnn", 64): 100, ("mobilenet_v2", 1): 40, ("mobilenet_v2", 64): 6}
ROUNDS = 2


def write_models(root: Path) -> dict[str, Path]:
    import keras

    from pipeline.model.demo import build_digits_cnn
    from pipeline.model.exporter import write_saved_model

    keras.utils.set_random_seed(0)
    paths = {"cnn": root / "cnn" / "1", "mobilenet_v2": root / "mobilenet_v2" / "1"}
    write_saved_model(build_digits_cnn(10), paths["cnn"], "inputs", "probabilities")
    mobilenet = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    write_saved_model(mobilenet, paths["mobilenet_v2"], "inputs", "probabilities")
    return paths


def child(paths: dict[str, str]) -> dict:
    """Runs in a fresh process whose TF_ENABLE_ONEDNN_OPTS was set before TF's import."""
    import numpy as np

    from serving.modelserver.servable import SavedModelServable

    out: dict = {}
    for name, path in paths.items():
        servable = SavedModelServable(name, 1, path)
        shape = servable.spec("").inputs["inputs"].dims[1:]
        for batch in (1, 64):
            x = np.random.default_rng(batch).random((batch, *shape), dtype=np.float32)
            n = REPS[(name, batch)]
            for _ in range(max(2, n // 10)):
                servable.run("", {"inputs": x})
            samples = []
            for _ in range(n):
                start = time.perf_counter()
                servable.run("", {"inputs": x})
                samples.append(time.perf_counter() - start)
            out[f"{name}/batch{batch}"] = float(np.median(samples) * 1e3)
        servable.close()
    return out


def run_child(paths: dict[str, Path], onednn: str) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    arg = json.dumps({k: str(v) for k, v in paths.items()})
    proc = subprocess.run([sys.executable, __file__, "--child", arg], env=env, cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"child (TF_ENABLE_ONEDNN_OPTS={onednn}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/onednn.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    sys.path.insert(0, str(REPO))
    from bench.common import write_results

    started = time.perf_counter()
    runs: dict[str, list[dict]] = {"0": [], "1": []}
    with tempfile.TemporaryDirectory(prefix="bench-onednn-") as tmp:
        paths = write_models(Path(tmp))
        for _ in range(ROUNDS):
            for setting in ("0", "1"):
                runs[setting].append(run_child(paths, setting))
    table = {}
    for key in runs["0"][0]:
        off = min(r[key] for r in runs["0"])  # best round: least disturbed by other load
        on = min(r[key] for r in runs["1"])
        table[key] = {"onednn_off_ms": round(off, 3), "onednn_on_ms": round(on, 3),
                      "off_over_on": round(off / on, 3)}
    cpu_flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        cpu_flags = " ".join(sorted({f for f in flags.split() if f.startswith(("avx512", "amx", "avx2"))}))
    except (OSError, StopIteration):
        pass
    write_results(args.out, "onednn", {"median_ms": table, "rounds": runs, "cpu_flags": cpu_flags,
                                       "seconds": round(time.perf_counter() - started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

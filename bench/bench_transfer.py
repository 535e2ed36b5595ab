"""Transfer learning benchmarks for the foundation issue.

1. Does transfer help? The digits demo (source 0-4 -> target 5-9, 5 labels/class),
   3 seeds: held-out accuracy of transfer + fine-tune vs the same net from scratch,
   with the repository's deploy.toml settings.
2. Bottleneck caching: training the head on cached base features vs plain `fit()`
   through the frozen base, same epochs, on >= 3,000 samples.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import parse_out, write_results  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data import Dataset, demo_target_domain, load_digits_arrays, split_dataset  # noqa: E402
from pipeline.progress import Reporter  # noqa: E402

QUIET = Reporter(quiet=True)
ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def source_model(tmp: Path) -> Path:
    from pipeline.demo import train_source_model

    path = tmp / "source.keras"
    train_source_model(path, epochs=30, seed=0, reporter=QUIET)
    return path


def transfer_vs_scratch(model_path: Path) -> dict:
    import keras

    from pipeline.training import train_from_scratch, transfer

    cfg = load_config(ROOT / "deploy.toml")
    rows = []
    for seed in SEEDS:
        tcfg = cfg.transfer.model_copy(update={"seed": seed})
        data = demo_target_domain(cfg.data.labels_per_class, cfg.data.test_fraction, seed)
        outcome = transfer(keras.models.load_model(model_path), cfg.model.cut_layer, data, tcfg, QUIET)
        base = train_from_scratch(keras.models.load_model(model_path), cfg.model.cut_layer, data, tcfg, QUIET)
        rows.append({"seed": seed, "transfer_accuracy": outcome.test_accuracy,
                     "scratch_accuracy": base.test_accuracy, "transfer_s": outcome.wall_s,
                     "scratch_s": base.wall_s})
    t = float(np.mean([r["transfer_accuracy"] for r in rows]))
    s = float(np.mean([r["scratch_accuracy"] for r in rows]))
    return {"labels_per_class": cfg.data.labels_per_class, "seeds": rows,
            "mean_transfer_accuracy": t, "mean_scratch_accuracy": s,
            "mean_gain_points": 100 * (t - s), "goal_gain_points": 25.0,
            "goal_met": 100 * (t - s) >= 25.0}


def augmented_target(copies: int, seed: int) -> Dataset:
    """Digits 5-9, each image repeated with small shifts and noise: >= 3,000 samples."""
    x, y = load_digits_arrays()
    keep = y >= 5
    x, y = x[keep], y[keep] - 5
    rng = np.random.default_rng(seed)
    xs, ys = [x], [y]
    for _ in range(copies - 1):
        shifted = np.roll(x, shift=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(1, 2))
        xs.append(np.clip(shifted + rng.normal(0, 0.05, x.shape).astype(np.float32), 0, 1))
        ys.append(y)
    return split_dataset(np.concatenate(xs), np.concatenate(ys), tuple("56789"), 0.2, seed)


def caching(model_path: Path, epochs: int = 15) -> dict:
    import keras

    from pipeline.config import TransferConfig
    from pipeline.training import accuracy, assemble, make_head, split_base, train_head, validation_split

    data = augmented_target(copies=4, seed=0)
    cfg = TransferConfig(head_epochs=epochs, patience=epochs + 1, validation_fraction=0.0,
                         batch_size=32, seed=0)
    results = {}
    for cached in (True, False):
        keras.utils.set_random_seed(0)
        base = split_base(keras.models.load_model(model_path), "features")
        head = make_head(tuple(base.output_shape[1:]), data.num_classes, 0)
        split = validation_split(data, 0.0, 0)
        t0 = time.perf_counter()
        phase = train_head(base, head, split, cfg, QUIET, cache_features=cached)
        wall = time.perf_counter() - t0
        results["cached" if cached else "plain_fit"] = {
            "fit_s": wall, "epochs_run": phase.epochs_run,
            "test_accuracy": accuracy(assemble(base, head), data.x_test, data.y_test)}
    speedup = results["plain_fit"]["fit_s"] / results["cached"]["fit_s"]
    diff = abs(results["plain_fit"]["test_accuracy"] - results["cached"]["test_accuracy"])
    return {"train_samples": int(len(data.y_train)), "epochs": epochs, **results,
            "speedup": speedup, "goal_speedup": 3.0, "accuracy_diff_points": 100 * diff,
            "goal_met": speedup >= 3.0 and 100 * diff <= 1.0}


def main() -> None:
    out = parse_out(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = source_model(Path(tmp))
        results = {"transfer_vs_scratch": transfer_vs_scratch(path), "bottleneck_caching": caching(path)}
    write_results(out, "transfer", results)


if __name__ == "__main__":
    main()

"""Transfer learning benchmarks for the foundation issue.

1. Does transfer help? The digits demo (source 0-4 -> target 5-9, 5 labels/class),
   3 seeds: held-out accuracy of transfer + fine-tune vs the same net from scratch,
   with the repository's deploy.toml settings.
2. Bottleneck caching: training the head on cached base features vs plain `fit()`
   through the frozen base, same epochs, on >= 3,000 samples.
3. Fine-tuning on cached activations: ResNet50 at 128x128 (random init), top 2
   layers unfrozen; epoch time when the frozen part below the first trained layer
   runs once vs on every step, and the held-out accuracy of both.
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
from pipeline.model.data import Dataset, demo_target_domain, load_digits_arrays, split_dataset  # noqa: E402
from pipeline.progress import Reporter  # noqa: E402

QUIET = Reporter(quiet=True)
ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def source_model(tmp: Path) -> Path:
    from pipeline.model.demo import train_source_model

    path = tmp / "source.keras"
    train_source_model(path, epochs=30, seed=0, reporter=QUIET)
    return path


def transfer_vs_scratch(model_path: Path) -> dict:
    import keras

    from pipeline.model.training import train_from_scratch, transfer

    cfg = load_config(ROOT / "deploy.toml")
    # as the load stage resolves it: unset means the layer feeding the classifier, not
    # the whole source model (softmax included)
    from pipeline.model.source import classifier_input_layer

    cut_layer = cfg.model.cut_layer or classifier_input_layer(keras.models.load_model(model_path))
    rows = []
    for seed in SEEDS:
        tcfg = cfg.transfer.model_copy(update={"seed": seed})
        data = demo_target_domain(cfg.data.labels_per_class, cfg.data.test_fraction, seed)
        outcome = transfer(keras.models.load_model(model_path), cut_layer, data, tcfg, QUIET)
        base = train_from_scratch(keras.models.load_model(model_path), cut_layer, data, tcfg, QUIET)
        # Control: the transfer recipe itself, started from random instead of source weights.
        random_init = keras.models.clone_model(keras.models.load_model(model_path))
        control = transfer(random_init, cut_layer, data, tcfg, QUIET)
        rows.append({"seed": seed, "transfer_accuracy": outcome.test_accuracy,
                     "scratch_accuracy": base.test_accuracy,
                     "random_init_same_recipe_accuracy": control.test_accuracy,
                     "transfer_s": outcome.wall_s, "scratch_s": base.wall_s})
    t = float(np.mean([r["transfer_accuracy"] for r in rows]))
    s = float(np.mean([r["scratch_accuracy"] for r in rows]))
    r = float(np.mean([row["random_init_same_recipe_accuracy"] for row in rows]))
    return {"labels_per_class": cfg.data.labels_per_class, "seeds": rows,
            "mean_transfer_accuracy": t, "mean_scratch_accuracy": s,
            "mean_random_init_same_recipe_accuracy": r,
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


def caching(model_path: Path, epochs: int = 15, repeats: int = 3) -> dict:
    """Median fit time of three ways to train the head on a frozen base, same epochs and batch.

    - cached: the project's path (features computed once, head fit with many steps per call);
    - plain_fit: `fit()` on the assembled model with the base frozen (what users do by default);
    - plain_fit_same_dispatch: plain fit with the same steps_per_execution, to show how much of
      the gain is the caching itself rather than the cheaper dispatch.
    """
    import keras

    from pipeline.config import TransferConfig
    from pipeline.model.training import (
        CACHED_HEAD_STEPS_PER_EXECUTION,
        _compile,
        accuracy,
        assemble,
        make_head,
        split_base,
        train_head,
    )

    data = augmented_target(copies=5, seed=0)
    cfg = TransferConfig(head_epochs=epochs, patience=epochs + 1, validation_fraction=0.0,
                         batch_size=32, seed=0)

    def one(mode: str) -> tuple[float, float]:
        keras.utils.set_random_seed(0)
        base = split_base(keras.models.load_model(model_path), "features")
        base.trainable = False
        head = make_head(tuple(base.output_shape[1:]), data.num_classes, 0)
        t0 = time.perf_counter()
        if mode == "plain_fit_same_dispatch":
            model = assemble(base, head)
            _compile(model, cfg.learning_rate, CACHED_HEAD_STEPS_PER_EXECUTION)
            model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=cfg.batch_size, verbose=0)
        else:
            from pipeline.model.training import Split

            split = Split(data.x_train, data.y_train, None, None)
            train_head(base, head, split, cfg, QUIET, cache_features=(mode == "cached"))
        wall = time.perf_counter() - t0
        return wall, accuracy(assemble(base, head), data.x_test, data.y_test)

    results = {}
    for mode in ("cached", "plain_fit", "plain_fit_same_dispatch"):
        runs = [one(mode) for _ in range(repeats)]
        results[mode] = {"fit_s_median": float(np.median([r[0] for r in runs])),
                         "fit_s_runs": [r[0] for r in runs], "test_accuracy": runs[0][1]}
    speedup = results["plain_fit"]["fit_s_median"] / results["cached"]["fit_s_median"]
    diff = abs(results["plain_fit"]["test_accuracy"] - results["cached"]["test_accuracy"])
    return {"train_samples": int(len(data.y_train)), "epochs": epochs, "batch_size": cfg.batch_size,
            **results, "speedup_vs_plain_fit": speedup,
            "speedup_vs_plain_fit_same_dispatch":
                results["plain_fit_same_dispatch"]["fit_s_median"] / results["cached"]["fit_s_median"],
            "goal_speedup": 3.0, "accuracy_diff_points": 100 * diff,
            "goal_met": speedup >= 3.0 and 100 * diff <= 1.0}


def upscaled_digits(size: int, seed: int) -> Dataset:
    """Digits 0-9 as size x size RGB images (nearest-neighbour upscaling)."""
    x, y = load_digits_arrays()
    factor = size // x.shape[1]
    x = np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)
    return split_dataset(np.repeat(x, 3, axis=-1)[:400], y[:400], tuple("0123456789"), 0.2, seed)


def fine_tune_caching(size: int = 128, epochs: int = 3) -> dict:
    """Per-epoch fine-tune time with and without caching the frozen part (same data, seed)."""
    import keras

    from pipeline.config import TransferConfig
    from pipeline.model.source import classifier_input_layer
    from pipeline.model.training import transfer

    data = upscaled_digits(size, seed=0)
    keras.utils.set_random_seed(0)
    source = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=10)
    weights = source.get_weights()
    cut_layer = classifier_input_layer(source)
    rows = {}
    for cached in (True, False):
        source.set_weights(weights)
        cfg = TransferConfig(head_epochs=1, fine_tune_epochs=epochs, unfreeze_top=2, patience=epochs + 1,
                             cache_features=cached, record_curves=False, validation_fraction=0.0, seed=0)
        outcome = transfer(source, cut_layer, data, cfg, QUIET)
        phase = outcome.phases["fine_tune"]
        rows["cached" if cached else "plain"] = {
            "phase_s": phase.wall_s, "setup_s": phase.setup_s, "cached_below": phase.cached_below,
            "epoch_s": (phase.wall_s - phase.setup_s) / phase.epochs_run,
            "test_accuracy": outcome.test_accuracy, "unfrozen": outcome.unfrozen}
    c, p = rows["cached"], rows["plain"]
    default_epochs = TransferConfig().fine_tune_epochs
    return {"model": f"ResNet50 {size}x{size} random init", "train_samples": int(len(data.y_train)),
            "epochs": epochs, **rows,
            "epoch_speedup": p["epoch_s"] / c["epoch_s"],
            "phase_speedup_at_default_epochs": (p["epoch_s"] * default_epochs)
            / (c["setup_s"] + c["epoch_s"] * default_epochs),
            "accuracy_diff_points": 100 * abs(c["test_accuracy"] - p["test_accuracy"]),
            "goal_epoch_speedup": 3.0}


def main() -> None:
    out = parse_out(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = source_model(Path(tmp))
        results = {"transfer_vs_scratch": transfer_vs_scratch(path), "bottleneck_caching": caching(path),
                   "fine_tune_caching": fine_tune_caching()}
    write_results(out, "transfer", results)


if __name__ == "__main__":
    main()

"""Which offline demo shows transfer learning beating training from scratch?

Acceptance line: over 5 seeds, with both arms on the same budget (one TransferConfig;
baseline_epochs = head_epochs + fine_tune_epochs), transfer beats from-scratch by >= 10
points of held-out accuracy on average, and reaches the from-scratch final accuracy in
<= 1/3 of the from-scratch wall time.

Every candidate is built by code from installed packages (scikit-learn's digits, the
fonts matplotlib ships, see pipeline/model/glyphs.py): a source domain, a source model trained on it
(once per candidate, not counted in either arm's time: it is the pre-trained asset),
and a target domain with a few labels per class. Per seed, `transfer()` and
`train_from_scratch()` from pipeline.model.training run on the same data and config.

The first candidate, `demo`, is what `make deploy` runs: deploy.toml's data and transfer
settings, the source model as `tfrollout demo source-model` trains it. The others are the
alternatives it was chosen from (session 5), kept so the choice can be re-checked.

Environment (the script takes only --out, like every `make bench` script):
  TRANSFER_DEMO_CANDIDATES=name,name  (default: all)   TRANSFER_DEMO_SEEDS=0,1  (default: 0-4)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import parse_out, write_results  # noqa: E402

from pipeline.config import AugmentConfig, TransferConfig, load_config  # noqa: E402
from pipeline.model import glyphs  # noqa: E402
from pipeline.model.data import (  # noqa: E402
    Dataset,
    demo_source_domain,
    demo_target_domain,
    few_shot_indices,
    load_digits_arrays,
    split_dataset,
    stratified_split,
)
from pipeline.model.demo import DEMO_SOURCE_EPOCHS  # noqa: E402
from pipeline.progress import Reporter  # noqa: E402

QUIET = Reporter(quiet=True)
ROOT = Path(__file__).resolve().parents[1]
CUT = "features"  # what the pipeline resolves for build_digits_cnn (the layer feeding the last Dense)
TEST_FRACTION = 0.3
GOAL_GAIN_POINTS = 10.0
GOAL_TIME_RATIO = 1 / 3

# One budget for both arms (the alternatives; `demo` uses deploy.toml's). validation_fraction=0:
# with 1-5 labels per class a validation split holds 0-1 example per class, and early stopping
# on it restored near-random weights (session 5); both arms stop on training loss instead.
BUDGET = {"head_epochs": 60, "fine_tune_epochs": 20, "baseline_epochs": 80, "learning_rate": 1e-2,
          "fine_tune_learning_rate": 1e-4, "unfreeze_top": 2, "patience": 20, "validation_fraction": 0.0,
          "batch_size": 32, "record_curves": True}


# --------------------------------------------------------------------------- domains


def digits_0_4_source() -> Dataset:
    """The demo before session 6: handwritten digits 0-4, all labels."""
    x, y = load_digits_arrays()
    keep = y < 5
    return split_dataset(x[keep], y[keep], tuple("01234"), 0.2, 0, "digits 0-4")


def digits_5_9_target(labels_per_class: int, seed: int) -> Dataset:
    """Handwritten digits 5-9 relabelled 0-4: k labelled, 30% held out."""
    x, y = load_digits_arrays()
    keep = y >= 5
    x, y = x[keep], y[keep] - 5
    pool, test = stratified_split(y, TEST_FRACTION, seed)
    labelled = pool[few_shot_indices(y[pool], labels_per_class, seed)]
    return Dataset(x[labelled], y[labelled], x[test], y[test], tuple("56789"))


WRITERS_SPLIT = 0.5  # load_digits is in collection order (grouped by writer): first half source, rest target


def new_writers_source() -> Dataset:
    """Handwritten digits 0-9 from the first half of the collection, all labels (the source)."""
    x, y = load_digits_arrays()
    n = int(len(y) * WRITERS_SPLIT)
    return split_dataset(x[:n], y[:n], tuple("0123456789"), 0.1, 0, "digits (first writers)")


def new_writers_target(labels_per_class: int, seed: int) -> Dataset:
    """Digits 0-9 from the other half (no image shared with the source): k labelled, 30% held out."""
    x, y = load_digits_arrays()
    n = int(len(y) * WRITERS_SPLIT)
    x, y = x[n:], y[n:]
    pool, test = stratified_split(y, TEST_FRACTION, seed)
    labelled = pool[few_shot_indices(y[pool], labels_per_class, seed)]
    return Dataset(x[labelled], y[labelled], x[test], y[test], tuple("0123456789"))


def glyph_source(chars: str, per_glyph: int) -> Dataset:
    x, y, names = glyphs.glyph_domain(chars, per_glyph, seed=0)
    return split_dataset(x, y, names, 0.1, 0, "glyphs")


def train_source(data: Dataset, epochs: int, out: Path) -> dict[str, Any]:
    """build_digits_cnn (the demo's architecture) on a source domain, saved as .keras."""
    import keras

    from pipeline.model.demo import build_digits_cnn

    keras.utils.set_random_seed(0)
    model = build_digits_cnn(data.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
    wall = time.perf_counter() - t0
    _, acc = model.evaluate(data.x_test, data.y_test, verbose=0)
    model.save(out)
    return {"classes": data.num_classes, "train_samples": int(len(data.y_train)), "epochs": epochs,
            "source_test_accuracy": float(acc), "train_s": wall}


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    source: Callable[[], Dataset]
    source_epochs: int
    target: Callable[[int], Dataset]  # seed -> target domain
    budget: dict[str, Any] = field(default_factory=lambda: dict(BUDGET))  # TransferConfig fields


def _old_demo_target(k: int) -> Callable[[int], Dataset]:
    return lambda seed: digits_5_9_target(k, seed)


def deploy_toml_candidate() -> Candidate:
    """What `make deploy` runs: deploy.toml's data and transfer settings, the CLI's source model."""
    cfg = load_config(ROOT / "deploy.toml")
    budget = cfg.transfer.model_dump(exclude={"seed", "baseline"}) | {"record_curves": True}
    k, held_out = cfg.data.labels_per_class, cfg.data.test_fraction
    return Candidate("demo", f"deploy.toml: printed digits (rendered from matplotlib's fonts) -> handwritten "
                     f"digits, {k} label(s)/class", lambda: demo_source_domain(seed=0), DEMO_SOURCE_EPOCHS,
                     lambda seed: demo_target_domain(k, held_out, seed), budget)


# Augmentation for 8x8 digits: small turns, zooms and shifts, the uncovered border black as
# the digits' background (no flips: a mirrored 2 is not a 2).
DIGIT_AUGMENT = {"rotation": 0.05, "zoom": 0.1, "translation": 0.1, "fill": "constant"}


def augmented_demo(name: str, augment: dict[str, Any], copies: int, note: str) -> Candidate:
    """The `demo` candidate with its augmentation replaced (both arms get it; the baseline is
    also trained without it, and the gain is taken against the better of the two)."""
    demo = deploy_toml_candidate()
    return Candidate(name, f"{demo.description}; augment {augment}, {note}", demo.source, demo.source_epochs,
                     demo.target, demo.budget | {"augment": augment, "augment_copies": copies})


def augmentation_candidates() -> list[Candidate]:
    """`demo` runs deploy.toml's choice (16 cached copies of DIGIT_AUGMENT); these are the
    settings it was chosen from, and the demo without augmentation."""
    return [
        augmented_demo("demo_no_augment", {}, 0, "no augmentation (the demo before session 10)"),
        augmented_demo("demo_aug_fly", DIGIT_AUGMENT, 0, "new changes every epoch"),
        augmented_demo("demo_aug_copies64", DIGIT_AUGMENT, 64, "64 cached copies"),
        augmented_demo("demo_shift_copies16", {"translation": 0.1, "fill": "constant"}, 16,
                       "shifts only, 16 cached copies"),
    ]


def _digits_target(k: int) -> Callable[[int], Dataset]:
    return lambda seed: demo_target_domain(k, TEST_FRACTION, seed)  # all ten handwritten digits


def candidates() -> list[Candidate]:
    return [
        deploy_toml_candidate(),
        Candidate("digits04_k5", "the demo before session 6: digits 0-4 -> 5-9, 5 labels/class",
                  digits_0_4_source, 30, _old_demo_target(5)),
        Candidate("digits04_k1", "digits 0-4 -> 5-9, 1 label/class", digits_0_4_source, 30, _old_demo_target(1)),
        Candidate("fontdigits_k1", "font-rendered digits 0-9 (21 fonts, augmented) -> handwritten digits "
                  "0-9, 1 label/class", lambda: glyph_source(glyphs.DIGITS, 40), 10, _digits_target(1)),
        Candidate("fontdigits_k3", "font-rendered digits -> handwritten digits, 3 labels/class",
                  lambda: glyph_source(glyphs.DIGITS, 40), 10, _digits_target(3)),
        Candidate("fontletters_k1", "font-rendered letters A-Z a-z only (no digit classes) -> handwritten "
                  "digits 0-9, 1 label/class", lambda: glyph_source(glyphs.LETTERS, 8), 10, _digits_target(1)),
        Candidate("newwriters_k1", "handwritten digits 0-9 of the first half of the collection (all labels) "
                  "-> the same ten classes by the other writers, 1 label/class (same label space: domain "
                  "shift only)", new_writers_source, 30, lambda seed: new_writers_target(1, seed)),
        *augmentation_candidates(),
    ]


# --------------------------------------------------------------------------- runs


def one_seed(model_path: Path, data: Dataset, budget: dict[str, Any], seed: int) -> dict[str, Any]:
    import keras

    from pipeline.model.training import time_to_accuracy, train_from_scratch, transfer

    cfg = TransferConfig(**budget, seed=seed)
    out = transfer(keras.models.load_model(model_path), CUT, data, cfg, QUIET)
    base = train_from_scratch(keras.models.load_model(model_path), CUT, data, cfg, QUIET)
    assert out.curve is not None and base.curve is not None and base.test_accuracy is not None
    plain = None  # with augmentation: the baseline also without it, the gain taken against the better
    if cfg.augment.enabled:
        plain = train_from_scratch(keras.models.load_model(model_path), CUT, data,
                                   cfg.model_copy(update={"augment": AugmentConfig()}), QUIET).test_accuracy
    strongest = base.test_accuracy if plain is None else max(base.test_accuracy, plain)
    target = base.test_accuracy
    tta = time_to_accuracy(out.curve.points, target)
    # Stricter reading: against the time scratch itself needed to get to its final accuracy
    # (its curve is before BatchNorm re-estimation, so this under-counts scratch time at worst).
    scratch_tta = time_to_accuracy(base.curve.points, target)
    return {"seed": seed, "transfer_accuracy": out.test_accuracy, "scratch_accuracy": target,
            "gain_points": 100 * (out.test_accuracy - target),
            "scratch_accuracy_without_augment": plain,
            "gain_vs_stronger_baseline_points": 100 * (out.test_accuracy - strongest),
            "transfer_s": out.wall_s, "scratch_s": base.wall_s,
            "transfer_epochs": {k: v.epochs_run for k, v in out.phases.items()},
            "scratch_epochs": base.epochs_run,
            "scratch_accuracy_before_bn_recalibration": base.accuracy_before_recalibration,
            "transfer_s_to_scratch_final_accuracy": tta,
            "time_ratio": None if tta is None else tta / base.wall_s,
            "time_ratio_vs_scratch_time_to_same_accuracy":
                None if tta is None or not scratch_tta else tta / scratch_tta,
            "transfer_curve": out.curve.to_json(), "scratch_curve": base.curve.to_json()}


def run_candidate(c: Candidate, seeds: list[int], tmp: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    path = tmp / f"{c.name}.keras"
    source = train_source(c.source(), c.source_epochs, path)
    rows = []
    for seed in seeds:
        rows.append(one_seed(path, c.target(seed), c.budget, seed))
        r = rows[-1]
        print(f"  {c.name} seed {seed}: transfer {r['transfer_accuracy']:.3f} scratch {r['scratch_accuracy']:.3f} "
              f"(without augment {r['scratch_accuracy_without_augment']}) ratio {r['time_ratio']}",
              file=sys.stderr, flush=True)
    t = float(np.mean([r["transfer_accuracy"] for r in rows]))
    s = float(np.mean([r["scratch_accuracy"] for r in rows]))
    ratios = [r["time_ratio"] for r in rows]
    worst = None if any(x is None for x in ratios) else float(max(ratios))
    mean_ratio = None if worst is None else float(np.mean(ratios))
    gain = 100 * (t - s)
    strict = [r["gain_vs_stronger_baseline_points"] for r in rows]
    data = c.target(seeds[0])
    return {"description": c.description, "source": source, "budget": c.budget, "labels_per_class_total": int(len(data.y_train)),
            "heldout": int(len(data.y_test)), "seeds": rows, "mean_transfer_accuracy": t,
            "mean_scratch_accuracy": s, "mean_gain_points": gain, "mean_time_ratio": mean_ratio,
            "mean_gain_vs_stronger_baseline_points": float(np.mean(strict)),
            "min_gain_vs_stronger_baseline_points": float(min(strict)),
            "seeds_at_least_5_points": int(sum(g >= 5.0 for g in strict)),
            "worst_time_ratio": worst, "n_seeds": len(seeds),
            "goal_met": len(seeds) >= 5 and gain >= GOAL_GAIN_POINTS and mean_ratio is not None
            and mean_ratio <= GOAL_TIME_RATIO, "candidate_s": time.perf_counter() - t0}


def main() -> None:
    out = parse_out(__doc__.splitlines()[0])
    wanted = [n for n in os.environ.get("TRANSFER_DEMO_CANDIDATES", "").split(",") if n]
    seeds = [int(s) for s in os.environ.get("TRANSFER_DEMO_SEEDS", "0,1,2,3,4").split(",")]
    chosen = [c for c in candidates() if not wanted or c.name in wanted]
    results: dict[str, Any] = {"budget": BUDGET, "cut_layer": CUT, "test_fraction": TEST_FRACTION,
                               "goal_gain_points": GOAL_GAIN_POINTS, "goal_time_ratio": GOAL_TIME_RATIO,
                               "candidates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for c in chosen:
            results["candidates"][c.name] = run_candidate(c, seeds, Path(tmp))
            write_results(out, "transfer_demo", results)  # partial results survive an interrupted run
    summary = {name: {k: r[k] for k in ("mean_transfer_accuracy", "mean_scratch_accuracy", "mean_gain_points",
                                        "mean_gain_vs_stronger_baseline_points",
                                        "min_gain_vs_stronger_baseline_points", "seeds_at_least_5_points",
                                        "mean_time_ratio", "worst_time_ratio", "n_seeds", "goal_met")}
               for name, r in results["candidates"].items()}
    results["summary"] = summary
    met = [n for n, r in summary.items() if r["goal_met"]]
    results["goal_met_by"] = met
    write_results(out, "transfer_demo", results)


if __name__ == "__main__":
    main()

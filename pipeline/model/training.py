"""Transfer learning core: split the source model, train a new head, fine-tune, compare.

Kept apart from the stage module so it can be driven by tests and benchmarks with
in-memory arrays. Frozen-base training runs on cached base features (the base is
evaluated once, not every epoch), then the full model is assembled. Rows are either
arrays in memory or lazy rows (an ImageSet decoded pass by pass, a FeatureFile read
from disk): lazy inputs train from tf.data streams, so memory does not grow with the
data set, and their frozen-base features go through the on-disk FeatureCache.

The strategies and their phases are here; the building blocks are their own modules
(`assembly`, `fitting`, `train_split`, `scoring`, `outcomes`), and the comparison
arm trained from scratch is `baseline`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import keras
import numpy as np

from pipeline.config import TransferConfig
from pipeline.errors import TransferError
from pipeline.model import augment
from pipeline.model.assembly import (
    assemble,
    cut_layer_name,
    layer_infos,
    make_head,
    split_at,
    split_base,
)
from pipeline.model.baseline import recalibrate_batchnorm, train_from_scratch
from pipeline.model.data import Dataset
from pipeline.model.feature_cache import FeatureCache, rows_of
from pipeline.model.fitting import compile_model, fit_phase, trainable_form
from pipeline.model.freeze import layers_to_unfreeze
from pipeline.model.graph_cut import frozen_cut
from pipeline.model.image_set import is_lazy
from pipeline.model.outcomes import PhaseResult, TransferOutcome
from pipeline.model.saved_model_base import plan_training, signature_layer
from pipeline.model.scoring import Curve, accuracy, time_to_accuracy
from pipeline.model.train_split import Split, validation_split
from pipeline.progress import Reporter

# The transfer stage and bench/ import these from here; the building blocks among them
# live in the modules imported above.
__all__ = ["CACHED_HEAD_STEPS_PER_EXECUTION", "HELDOUT_BASE", "Split", "accuracy", "assemble",
           "augmentation_plan", "check_unfreeze_settings", "features_of", "fine_tune_cached", "make_head",
           "planned_cut", "recalibrate_batchnorm", "split_base", "time_to_accuracy", "train_from_scratch",
           "train_head", "transfer"]

_compile = compile_model  # the old private name: bench/bench_transfer.py imports it from here


HELDOUT_BASE = "frozen base: held-out features"

# A head on cached features costs microseconds per step, so Keras' per-step dispatch
# dominates; running many steps per compiled call removes most of that overhead.
CACHED_HEAD_STEPS_PER_EXECUTION = 64


def features_of(model: Any, x: Any, cache: FeatureCache | None, label: str) -> Any:
    """`model`'s outputs for `x`: computed in memory for arrays; for lazy rows, streamed
    through the on-disk cache (reused when the key matches) and handed back as rows."""
    if not is_lazy(x):
        return model.predict(x, batch_size=256, verbose=0)
    if cache is None:
        raise TransferError("internal: lazy rows need a feature cache")
    return rows_of(cache.features(model, x, label))


def train_head(base: Any, head: Any, split: Split, cfg: TransferConfig, reporter: Reporter,
               *, cache_features: bool, curve: Curve | None = None,
               heldout: tuple[Any, np.ndarray] | None = None, cache: FeatureCache | None = None,
               through: tuple[Any, Any] | None = None, augmenter: Any = None) -> PhaseResult:
    """Train the head on a frozen base: on cached features, or through the base every epoch.

    `through` = (bottom, top) splits the base where fine-tuning will cache it: the head's
    features are then `top` over the bottom's cached outputs, which the fine-tune phase
    reads again — the images go through the bottom once, not twice."""
    base.trainable = False
    if cache_features:
        t0 = time.perf_counter()

        def base_features(x: Any, label: str) -> Any:
            if through is None:
                return features_of(base, x, cache, label)
            bottom, top = through
            below = features_of(bottom, x, cache, label.replace("frozen base", "frozen bottom"))
            return features_of(top, below, cache, label)

        f_fit = base_features(split.x_fit, "frozen base: training features")
        extra = []
        if curve is not None and heldout is not None:  # the head alone scores cached held-out features
            extra = [curve.callback(head, base_features(heldout[0], HELDOUT_BASE), heldout[1])]
        validation = split.validation
        val = None
        if validation is not None:
            val = (base_features(validation[0], "frozen base: validation features"), validation[1])
        extract_s = time.perf_counter() - t0
        steps_per_epoch = max(1, -(-len(f_fit) // cfg.batch_size))
        compile_model(head, cfg.learning_rate, min(CACHED_HEAD_STEPS_PER_EXECUTION, steps_per_epoch))
        result = fit_phase(head, f_fit, split.y_fit, val, split, cfg.head_epochs, cfg, reporter,
                           "train head (cached features)", extra)
        return PhaseResult(result.epochs_run, result.wall_s + extract_s, setup_s=extract_s)
    model = assemble(base, head)
    trainer = trainable_form(model, augmenter)
    compile_model(trainer, cfg.learning_rate)
    val = split.validation
    callbacks = [curve.callback(model, *heldout)] if curve is not None and heldout is not None else []
    return fit_phase(trainer, split.x_fit, split.y_fit, val, split, cfg.head_epochs, cfg, reporter,
                     "train head (frozen base)", callbacks)


def fine_tune_cached(base: Any, head: Any, cut: Any, split: Split, cfg: TransferConfig,
                     reporter: Reporter, curve: Curve | None,
                     heldout: tuple[Any, np.ndarray], cache: FeatureCache | None = None,
                     scores: list[Callable[[], float]] | None = None) -> PhaseResult:
    """Fine-tune on the cached output of the frozen part below `cut` (see graph_cut).

    The trained layers are the base's own (shared weights), called in inference mode
    as `assemble` calls them, so the assembled model ends up exactly as trained.
    `scores`, when given, receives a function scoring the result on cached held-out
    features (lazy rows: no second decode of the held-out images)."""
    t0 = time.perf_counter()
    bottom, top = split_at(base, cut)
    below = cut_layer_name(base, cut)

    def features(x: Any, part: str) -> Any:
        return features_of(bottom, x, cache, f"frozen bottom ({below}): {part} features")

    f_fit = features(split.x_fit, "training")
    val = None if split.validation is None else (features(split.validation[0], "validation"), split.validation[1])
    inputs = keras.Input(tuple(cut.shape[1:]), name="cached")
    model = keras.Model(inputs, head(top(inputs, training=False)), name="fine_tune_cached")
    extra = [curve.callback(model, features(heldout[0], "held-out"), heldout[1])] if curve is not None else []
    if scores is not None:
        scores.append(lambda: accuracy(model, features(heldout[0], "held-out"), heldout[1]))
    extract_s = time.perf_counter() - t0
    compile_model(model, cfg.fine_tune_learning_rate)
    result = fit_phase(model, f_fit, split.y_fit, val, split, cfg.fine_tune_epochs, cfg, reporter,
                       f"fine-tune top layers (on cached {below} outputs)", extra)
    return PhaseResult(result.epochs_run, result.wall_s + extract_s, cached_below=below, setup_s=extract_s)


def transfer(source_model: Any, cut_layer: str | None, data: Dataset, cfg: TransferConfig,
             reporter: Reporter, cache: FeatureCache | None = None) -> TransferOutcome:
    """Run the configured strategy and return the assembled target model.

    With lazy rows (an ImageSet) and no `cache`, features go to a temporary cache
    removed at the end; the stage passes a persistent one so a re-run reuses them.
    With augmentation, see `augment` for the two ways it is applied."""
    cfg, plan = augmentation_plan(cfg, reporter)
    if is_lazy(data.x_train) and cache is None and cfg.cache_features:
        with FeatureCache(None, reporter) as temporary:
            return _transfer(source_model, cut_layer, data, cfg, reporter, temporary, plan)
    return _transfer(source_model, cut_layer, data, cfg, reporter, cache, plan)


def _transfer(source_model: Any, cut_layer: str | None, data: Dataset, cfg: TransferConfig,
              reporter: Reporter, cache: FeatureCache | None, plan: dict[str, Any] | None) -> TransferOutcome:
    keras.utils.set_random_seed(cfg.seed)
    t0 = time.perf_counter()
    split = validation_split(data, cfg.validation_fraction, cfg.seed)
    augmenter = None if plan is None else augment.layers(cfg.augment, augment.pixel_range(data.x_train), cfg.seed)
    cached_split = split  # what the phases on cached features train on: with copies, originals + copies
    if plan is not None and plan["applied"] == "cached copies":
        cached_split = replace(split, x_fit=augment.with_copies(split.x_fit, cfg.augment, cfg.augment_copies, cfg.seed),
                               y_fit=np.tile(split.y_fit, cfg.augment_copies + 1))
        plan["training_rows"] = int(len(cached_split.y_fit))
    base = split_base(source_model, cut_layer)
    head = make_head(tuple(base.output_shape[1:]), data.num_classes, cfg.head_units)
    phases: dict[str, PhaseResult] = {}
    unfrozen: list[str] = []
    val = split.validation
    curve = Curve(t0) if cfg.record_curves else None
    heldout = (data.x_test, data.y_test)
    # Lazy rows: the final accuracy is scored on cached held-out features by the part of the
    # model that trained on them (same weights) instead of decoding every held-out image again.
    scores: list[Callable[[], float]] | None = [] if is_lazy(data.x_test) and cfg.cache_features else None

    def track(model: Any) -> list[keras.callbacks.Callback]:
        return [curve.callback(model, *heldout)] if curve is not None else []

    saved = signature_layer(base)  # a SavedModel base: its variables, not layers, are trained
    check_unfreeze_settings(saved is not None, cfg)
    trained = [] if saved is None else plan_training(saved, cfg.strategy, cfg.unfreeze_variables,
                                                     cfg.fine_tune_epochs)
    if cfg.strategy == "full":
        base.trainable = True
        if saved is not None:
            saved.train_only(trained)
        model = assemble(base, head)
        trainer = trainable_form(model, augmenter)
        compile_model(trainer, cfg.learning_rate)
        phases["full"] = fit_phase(trainer, split.x_fit, split.y_fit, val, split, cfg.head_epochs, cfg,
                                   reporter, "train all layers", track(model))
        unfrozen = ([info.name for info in layer_infos(base) if info.has_weights] if saved is None
                    else [saved.restored_names[i] for i in trained])
        scores = None
    else:
        planned = planned_cut(base, cfg) if is_lazy(data.x_train) else None
        phases["head"] = train_head(base, head, cached_split if cfg.cache_features else split, cfg, reporter,
                                    cache_features=cfg.cache_features, curve=curve, heldout=heldout,
                                    cache=cache, through=None if planned is None else split_at(base, planned),
                                    augmenter=None if cfg.cache_features else augmenter)
        if scores is not None:
            scores.append(lambda: accuracy(head, features_of(base, data.x_test, cache, HELDOUT_BASE), data.y_test))
        model = assemble(base, head)
        if cfg.strategy == "fine-tune" and cfg.fine_tune_epochs > 0:
            if saved is None:
                unfrozen = layers_to_unfreeze(layer_infos(base), top=cfg.unfreeze_top, after=cfg.unfreeze_after)
            else:
                unfrozen = [saved.restored_names[i] for i in trained]
            if unfrozen:
                base.trainable = True
                if saved is not None:  # the signature runs whole every step: nothing below to cache
                    saved.train_only(trained)
                else:
                    for layer in base.layers:
                        layer.trainable = layer.name in unfrozen
                cut = frozen_cut(base, set(unfrozen)) if cfg.cache_features and saved is None else None
                if cut is not None:
                    phases["fine_tune"] = fine_tune_cached(base, head, cut, cached_split, cfg, reporter,
                                                           curve, heldout, cache, scores)
                else:
                    scores = None  # the top trained on images: score the whole model on them
                    if plan is not None and plan["applied"] == "cached copies":
                        plan["fine_tune"] = "on the fly (no frozen part below the unfrozen layers to cache)"
                    trainer = trainable_form(model, augmenter)
                    compile_model(trainer, cfg.fine_tune_learning_rate)
                    phases["fine_tune"] = fit_phase(trainer, split.x_fit, split.y_fit, val, split,
                                                    cfg.fine_tune_epochs, cfg, reporter, "fine-tune top layers",
                                                    track(model))
            else:
                reporter.note("fine-tune: no base layer (or SavedModel variable) selected to unfreeze; "
                              "keeping the frozen base")
        if saved is not None and unfrozen:
            reporter.note(f"{cfg.strategy}: trained {len(unfrozen)} of the SavedModel's {len(saved.restored)} "
                          f"variables ({', '.join(unfrozen[:4])}{', ...' if len(unfrozen) > 4 else ''})")
    test_accuracy = scores[-1]() if scores else accuracy(model, data.x_test, data.y_test)
    return TransferOutcome(model, test_accuracy, phases, unfrozen, time.perf_counter() - t0, curve, plan)


def augmentation_plan(cfg: TransferConfig, reporter: Reporter) -> tuple[TransferConfig, dict[str, Any] | None]:
    """(the settings to train with, how augmentation applies — None without it).

    Fresh changes every epoch mean the base sees new inputs every epoch, so the feature
    cache cannot serve: on the fly turns it off (and says so); K copies keep it."""
    if not cfg.augment.enabled:
        return cfg, None
    plan: dict[str, Any] = {"layers": augment.describe(cfg.augment), "copies": cfg.augment_copies}
    if cfg.augment_copies and cfg.cache_features:
        plan["applied"] = "cached copies"
        reporter.note(f"augmentation: {cfg.augment_copies} augmented copies of the labelled set, their "
                      "frozen-base features computed once and cached")
        return cfg, plan
    plan["applied"] = "on the fly"
    if cfg.cache_features and cfg.strategy != "full":
        reporter.note("augmentation on the fly: the frozen base runs every epoch (no feature cache); "
                      "transfer.augment_copies = K caches K augmented copies instead")
    return cfg.model_copy(update={"cache_features": False}), plan


def check_unfreeze_settings(saved_model: bool, cfg: TransferConfig) -> None:
    """Fine-tune settings that do not apply to this kind of base are refused, not ignored."""
    if cfg.strategy != "fine-tune":
        return
    if saved_model and cfg.unfreeze_after is not None:
        raise TransferError(f"transfer.unfreeze_after = {cfg.unfreeze_after!r} names a layer, and a SavedModel "
                            "base has none; choose its variables with transfer.unfreeze_variables")
    if not saved_model and cfg.unfreeze_variables is not None:
        raise TransferError("transfer.unfreeze_variables selects a SavedModel base's variables; this base is a "
                            "Keras model: choose its layers with transfer.unfreeze_top / unfreeze_after")


def planned_cut(base: Any, cfg: TransferConfig) -> Any | None:
    """Where the fine-tune phase will cache the base (None: it will not), known before the
    head trains: which layers unfreeze depends only on the base's layers and the config."""
    if cfg.strategy != "fine-tune" or not cfg.cache_features or cfg.fine_tune_epochs <= 0:
        return None
    if signature_layer(base) is not None:  # a SavedModel base is one function: no cut inside it
        return None
    unfrozen = layers_to_unfreeze(layer_infos(base), top=cfg.unfreeze_top, after=cfg.unfreeze_after)
    return frozen_cut(base, set(unfrozen)) if unfrozen else None

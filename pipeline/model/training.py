"""Transfer learning core: split the source model, train a new head, fine-tune, compare.

Kept apart from the stage module so it can be driven by tests and benchmarks with
in-memory arrays. Frozen-base training runs on cached base features (the base is
evaluated once, not every epoch), then the full model is assembled. Rows are either
arrays in memory or lazy rows (an ImageSet decoded pass by pass, a FeatureFile read
from disk): lazy inputs train from tf.data streams, so memory does not grow with the
data set, and their frozen-base features go through the on-disk FeatureCache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import keras
import numpy as np

from pipeline.config import TransferConfig
from pipeline.errors import TransferError
from pipeline.model import augment
from pipeline.model.data import Dataset, stratified_split
from pipeline.model.feature_cache import FeatureCache, rows_of
from pipeline.model.freeze import LayerInfo, layers_to_unfreeze
from pipeline.model.graph_cut import frozen_cut
from pipeline.model.image_set import is_lazy, named_decode_errors
from pipeline.model.saved_model_base import plan_training, signature_layer
from pipeline.progress import Advance, Reporter


class ProgressCallback(keras.callbacks.Callback):
    """Advances a progress bar once per epoch and shows the latest loss."""

    def __init__(self, advance: Advance) -> None:
        super().__init__()
        self._advance = advance

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        parts = [f"{k} {v:.3f}" for k, v in logs.items() if k in {"loss", "val_loss", "val_accuracy"}]
        self._advance(1, status=" ".join(parts))


@dataclass
class Curve:
    """Held-out accuracy after every epoch, against the epoch count and the wall time since t0.

    The same numbers `accuracy()` reports at the end, taken along the way: they show
    how fast each arm learns (the pictures and `time_to_accuracy`).
    """

    t0: float
    points: list[tuple[int, float, float]] = field(default_factory=list)  # (epoch, wall_s, accuracy)

    def callback(self, model: Any, x: Any, y: np.ndarray) -> keras.callbacks.Callback:
        """Records `model`'s accuracy on (x, y) after each epoch; epochs continue across phases.

        Must come after EarlyStopping in the callback list: its `restore_best_weights`
        runs at train end, and the point recorded then is the model the phase hands on
        (otherwise the next phase seems to start with a drop that is only the restore).
        """
        curve = self
        offset = self.points[-1][0] if self.points else 0

        class Record(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                acc = quick_accuracy(model, x, y)
                curve.points.append((offset + epoch + 1, time.perf_counter() - curve.t0, acc))

            def on_train_end(self, logs: dict[str, float] | None = None) -> None:
                if not curve.points:
                    return
                epoch, _, last = curve.points[-1]
                acc = quick_accuracy(model, x, y)
                if acc != last:  # weights were restored: the phase ends on this model, same epoch count
                    curve.points.append((epoch, time.perf_counter() - curve.t0, acc))

        return Record()

    def to_json(self) -> list[list[float]]:
        return [[e, round(w, 4), a] for e, w, a in self.points]


def quick_accuracy(model: Any, x: Any, y: np.ndarray, batch_size: int = 256) -> float:
    """Accuracy by calling the model directly: `predict()` builds a dataset and a function per
    call (≈50 ms), which dominated the per-epoch curves on small held-out sets."""
    if len(x) == 0:
        return float("nan")
    hits = start = 0
    with named_decode_errors(x):
        for batch in row_batches(x, batch_size):  # in row order: labels follow by position
            out = np.asarray(model(batch, training=False))
            hits += int(np.sum(np.argmax(out, axis=-1) == y[start:start + len(batch)]))
            start += len(batch)
    return hits / len(x)


def row_batches(x: Any, batch_size: int) -> Any:
    """`x` in row order, `batch_size` rows at a time: slices of an array, or a lazy pass."""
    if is_lazy(x):
        return x.batches(batch_size)
    return (x[start:start + batch_size] for start in range(0, len(x), batch_size))


def time_to_accuracy(points: list[tuple[int, float, float]], target: float) -> float | None:
    """Wall seconds until held-out accuracy first reached `target` (None: never) — pure."""
    for _, wall_s, acc in points:
        if acc >= target:
            return wall_s
    return None


@dataclass
class PhaseResult:
    epochs_run: int
    wall_s: float
    cached_below: str | None = None  # the layer whose output was computed once (see graph_cut)
    setup_s: float = 0.0  # of wall_s: computing the cached activations


@dataclass
class TransferOutcome:
    model: Any
    test_accuracy: float
    phases: dict[str, PhaseResult]
    unfrozen: list[str]
    wall_s: float
    curve: Curve | None = None
    augmentation: dict[str, Any] | None = None  # how augmentation was applied (None: it was not)
    reused: bool = False  # read from an earlier run's record (see outcome_records), not retrained


@dataclass
class BaselineOutcome:
    test_accuracy: float | None
    epochs_run: int
    wall_s: float
    skipped_reason: str | None = None
    bn_layers_recalibrated: int = 0
    examples: int = 0  # labelled examples the baseline trained on
    capped_from: int | None = None  # the labelled set's size when transfer.baseline_max_examples cut it
    accuracy_before_recalibration: float | None = None
    curve: Curve | None = None
    reused: bool = False  # read from an earlier run's record (see outcome_records), not retrained
    augmented: bool = False  # trained with the augmentation on the fly


@dataclass
class Split:
    """Training rows and the early-stopping validation rows (stratified); x as arrays or lazy rows."""

    x_fit: Any
    y_fit: np.ndarray
    x_val: Any
    y_val: np.ndarray | None
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def validation(self) -> tuple[Any, np.ndarray] | None:
        """(x_val, y_val) for Keras' validation_data; None without a validation split."""
        if self.x_val is None or self.y_val is None:
            return None
        return self.x_val, self.y_val


# Fewer labelled examples per class than this: no validation split. With 5 labels a class a
# 0.2 split validates on 1 example per class, and early stopping on it restored weights
# from epoch 19 of 39 that scored 0.53 held-out against 0.72 at the end (session 5's
# diagnosis); stopping on the training loss uses every label instead.
MIN_LABELS_PER_CLASS_FOR_VALIDATION = 10


def validation_split(data: Dataset, fraction: float, seed: int) -> Split:
    """Hold out `fraction` of the labelled set for early stopping, unless it is few-shot data."""
    if fraction <= 0 or len(data.y_train) < MIN_LABELS_PER_CLASS_FOR_VALIDATION * data.num_classes:
        return Split(data.x_train, data.y_train, None, None)
    fit, val = stratified_split(data.y_train, fraction, seed)
    if len(val) == 0:
        return Split(data.x_train, data.y_train, None, None)
    return Split(data.x_train[fit], data.y_train[fit], data.x_train[val], data.y_train[val])


def split_base(model: Any, cut_layer: str | None) -> Any:
    """The source model up to (and including) the cut layer, as its own model."""
    if cut_layer is None:
        return model
    return keras.Model(model.inputs, model.get_layer(cut_layer).output, name="base")


def make_head(feature_shape: tuple[int, ...], num_classes: int, hidden_units: int) -> Any:
    """New classification head for the target classes."""
    layers: list[Any] = [keras.Input(feature_shape, name="features")]
    if len(feature_shape) > 1:
        layers.append(keras.layers.Flatten(name="head_flatten"))
    if hidden_units:
        layers.append(keras.layers.Dense(hidden_units, activation="relu", name="head_hidden"))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="head_output"))
    return keras.Sequential(layers, name="new_head")


def assemble(base: Any, head: Any) -> Any:
    """inputs -> base (inference mode: BatchNorm keeps source statistics) -> head."""
    inputs = keras.Input(tuple(base.input_shape[1:]), name="inputs")
    outputs = head(base(inputs, training=False))
    return keras.Model(inputs, outputs, name="transferred")


def check_finite_losses(losses: list[float], label: str) -> None:
    """A NaN or infinite training loss means the weights are garbage: stop with a clear error."""
    for epoch, loss in enumerate(losses, start=1):
        if not np.isfinite(loss):
            raise TransferError(f"{label}: the training loss became {loss} at epoch {epoch}; the "
                                "learning rate is probably too high (or the data holds NaN/Inf)")


def _early_stopping(split: Split, patience: int) -> keras.callbacks.EarlyStopping:
    monitor = "val_loss" if split.validation is not None else "loss"
    return keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)


def fit_arguments(x: Any, y: np.ndarray, val: tuple[Any, np.ndarray] | None, batch_size: int,
                  seed: int) -> dict[str, Any]:
    """model.fit's data arguments: arrays as they are, lazy rows as shuffled tf.data streams."""
    if not is_lazy(x):
        return {"x": x, "y": y, "validation_data": val, "batch_size": batch_size, "shuffle": True}
    if val is not None and is_lazy(val[0]):
        val = val[0].training_dataset(val[1], batch_size, seed, shuffle=False)
    return {"x": x.training_dataset(y, batch_size, seed), "validation_data": val,
            "shuffle": False}  # the stream reshuffles itself every epoch


def _fit(model: Any, x: Any, y: np.ndarray, val: tuple[Any, np.ndarray] | None,
         split: Split, epochs: int, cfg: TransferConfig, reporter: Reporter, label: str,
         extra: list[keras.callbacks.Callback] | None = None) -> PhaseResult:
    t0 = time.perf_counter()
    with reporter.progress(label, epochs, unit="epochs") as advance, named_decode_errors(x):
        history = model.fit(**fit_arguments(x, y, val, cfg.batch_size, cfg.seed), epochs=epochs, verbose=0,
                            callbacks=[keras.callbacks.TerminateOnNaN(), _early_stopping(split, cfg.patience),
                                       ProgressCallback(advance), *(extra or [])])
        losses = history.history.get("loss", [])
        epochs_run = len(losses)
        check_finite_losses(losses, label)
        if epochs_run < epochs:
            advance(0, status=f"early stop after {epochs_run} epochs (best weights restored)")
    return PhaseResult(epochs_run, time.perf_counter() - t0)


HELDOUT_BASE = "frozen base: held-out features"

# A head on cached features costs microseconds per step, so Keras' per-step dispatch
# dominates; running many steps per compiled call removes most of that overhead.
CACHED_HEAD_STEPS_PER_EXECUTION = 64


def _compile(model: Any, learning_rate: float, steps_per_execution: int = 1) -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)


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
        _compile(head, cfg.learning_rate, min(CACHED_HEAD_STEPS_PER_EXECUTION, steps_per_epoch))
        result = _fit(head, f_fit, split.y_fit, val, split, cfg.head_epochs, cfg, reporter,
                      "train head (cached features)", extra)
        return PhaseResult(result.epochs_run, result.wall_s + extract_s, setup_s=extract_s)
    model = assemble(base, head)
    trainer = trainable_form(model, augmenter)
    _compile(trainer, cfg.learning_rate)
    val = split.validation
    callbacks = [curve.callback(model, *heldout)] if curve is not None and heldout is not None else []
    return _fit(trainer, split.x_fit, split.y_fit, val, split, cfg.head_epochs, cfg, reporter,
                "train head (frozen base)", callbacks)


def trainable_form(model: Any, augmenter: Any) -> Any:
    """What model.fit trains: `model`, or `model` behind the augmentation layers (shared weights)."""
    return model if augmenter is None else augment.training_wrapper(model, augmenter)


def split_at(base: Any, cut: Any) -> tuple[Any, Any]:
    """(the frozen part below `cut`, the part above it) as models sharing the base's layers.
    Built the same way each time, so the bottom's cache key is the same in both phases."""
    return keras.Model(base.inputs, cut, name="frozen_bottom"), keras.Model(cut, base.output, name="trained_top")


def cut_layer_name(model: Any, tensor: Any) -> str:
    """The name of the layer of `model` that outputs `tensor` (for reports)."""
    for layer in model.layers:
        if any(out is tensor for out in keras.tree.flatten(layer.output)):
            return str(layer.name)
    return "cut"


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
    _compile(model, cfg.fine_tune_learning_rate)
    result = _fit(model, f_fit, split.y_fit, val, split, cfg.fine_tune_epochs, cfg, reporter,
                  f"fine-tune top layers (on cached {below} outputs)", extra)
    return PhaseResult(result.epochs_run, result.wall_s + extract_s, cached_below=below, setup_s=extract_s)


def layer_infos(model: Any) -> list[LayerInfo]:
    return [LayerInfo(layer.name, bool(layer.weights),
                      isinstance(layer, keras.layers.BatchNormalization)) for layer in model.layers]


def accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    if is_lazy(x):
        return quick_accuracy(model, x, y)
    predictions = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


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
        _compile(trainer, cfg.learning_rate)
        phases["full"] = _fit(trainer, split.x_fit, split.y_fit, val, split, cfg.head_epochs, cfg,
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
                    _compile(trainer, cfg.fine_tune_learning_rate)
                    phases["fine_tune"] = _fit(trainer, split.x_fit, split.y_fit, val, split,
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


def fresh_base(source_model: Any, cut_layer: str | None) -> Any:
    """The base's architecture with new random weights, every layer trainable.

    clone_model copies each layer's `trainable` flag, and the transfer run before the
    baseline froze the (shared) source layers: without this the baseline would train
    only the top layers above a frozen random base — a handicapped baseline.
    """
    base = keras.models.clone_model(split_base(source_model, cut_layer))
    for layer in [base, *base.layers]:
        layer.trainable = True
    return base


def train_from_scratch(source_model: Any, cut_layer: str | None, data: Dataset, cfg: TransferConfig,
                       reporter: Reporter) -> BaselineOutcome:
    """The same architecture with fresh weights, trained on the same labelled set (the baseline)."""
    keras.utils.set_random_seed(cfg.seed)
    t0 = time.perf_counter()
    if signature_layer(split_base(source_model, cut_layer)) is not None:
        return BaselineOutcome(None, 0, 0.0, "a SavedModel base has no architecture to re-initialise "
                                             "(only its trained function): no from-scratch baseline")
    try:
        base = fresh_base(source_model, cut_layer)
    except Exception as exc:  # e.g. a SavedModel base cannot be re-initialised
        return BaselineOutcome(None, 0, 0.0, f"architecture cannot be cloned ({type(exc).__name__})")
    head = make_head(tuple(base.output_shape[1:]), data.num_classes, cfg.head_units)
    inputs = keras.Input(tuple(base.input_shape[1:]), name="inputs")
    model = keras.Model(inputs, head(base(inputs)), name="from_scratch")
    augmenter = None  # no frozen base to cache: the baseline augments on the fly
    if cfg.augment.enabled:
        augmenter = augment.layers(cfg.augment, augment.pixel_range(data.x_train), cfg.seed)
    trainer = trainable_form(model, augmenter)
    _compile(trainer, cfg.learning_rate)
    split = validation_split(data, cfg.validation_fraction, cfg.seed)
    split, capped_from = cap_examples(split, cfg.baseline_max_examples, cfg.seed)
    if capped_from is not None:
        reporter.note(f"baseline: trained on {len(split.y_fit)} of {capped_from} labelled examples "
                      f"(transfer.baseline_max_examples = {cfg.baseline_max_examples}); transfer used all")
    val = split.validation
    curve = Curve(t0) if cfg.record_curves else None
    phase = _fit(trainer, split.x_fit, split.y_fit, val, split, cfg.scratch_epochs, cfg, reporter,
                 "baseline: same net from scratch",
                 [curve.callback(model, data.x_test, data.y_test)] if curve is not None else [])
    before = None
    recalibrated = 0
    if batchnorm_layers(model):  # inference-mode numbers need population statistics (see below)
        before = accuracy(model, data.x_test, data.y_test)
        recalibrated = recalibrate_batchnorm(model, split.x_fit)
    return BaselineOutcome(accuracy(model, data.x_test, data.y_test), phase.epochs_run,
                           time.perf_counter() - t0, bn_layers_recalibrated=recalibrated,
                           examples=int(len(split.y_fit)), capped_from=capped_from,
                           accuracy_before_recalibration=before, curve=curve, augmented=augmenter is not None)


def cap_examples(split: Split, limit: int | None, seed: int) -> tuple[Split, int | None]:
    """At most `limit` training rows, a stratified seeded subset (every class kept); the
    original count when it cut, else None. Validation rows are left as they are."""
    total = len(split.y_fit)
    if limit is None or total <= limit:
        return split, None
    keep, _ = stratified_split(split.y_fit, 1.0 - limit / total, seed)
    return Split(split.x_fit[keep], split.y_fit[keep], split.x_val, split.y_val), total


def batchnorm_layers(model: Any) -> list[Any]:
    """Every trainable BatchNormalization layer, nested models included."""
    found: list[Any] = []

    def walk(layer: Any) -> None:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
        for child in getattr(layer, "layers", []):
            walk(child)

    walk(model)
    return found


def recalibrate_batchnorm(model: Any, x: Any, batch_size: int = 64) -> int:
    """Replace BN moving statistics with the average of per-batch statistics over `x`.

    A net trained from scratch for a few dozen steps has moving averages (momentum
    0.99-0.999) still close to their initial 0/1, so its inference-mode accuracy says
    little about what it learned — chance level in a MobileNetV2 test. Running the
    training inputs forward once in training mode with momentum (i-1)/i at batch i
    leaves each moving mean/variance equal to the mean of the batch statistics: the
    same estimate Keras would converge to, reached in one pass. Weights do not change.
    """
    layers = batchnorm_layers(model)
    if not layers or len(x) == 0:
        return 0
    saved = [layer.momentum for layer in layers]
    try:
        for i, batch in enumerate(row_batches(x, batch_size), start=1):
            for layer in layers:
                layer.momentum = (i - 1) / i
            model(batch, training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return len(layers)

"""A SavedModel signature as a Keras layer whose variables are the restored ones.

`keras.layers.TFSMLayer` copies the SavedModel's variables into new Keras variables
that its signature never reads: training them changes nothing (the "full" strategy
ran 60 epochs with the loss of a frozen head), and their names (`Conv1/kernel:0` ->
`Conv1_kernel:0`) are refused by the optimizer as slot scopes. Here each Keras
variable *is* the restored `tf.Variable` (no copy), under an optimizer-safe name, so
gradients through the signature reach the variables the optimizer updates, and the
exported serving model captures exactly the values that were trained.

The pure choices (which signature output, which names) come first; the TensorFlow
part only reads the SavedModel and wraps it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from pipeline.errors import ModelLoadError, TransferError
from pipeline.model.digest import file_digest

LAYER_NAME = "saved_model_features"


def pick_output(outputs: list[str], wanted: str | None, where: str) -> str:
    """The signature output that is the base's features (pure): the only one, or `wanted`."""
    if wanted is not None:
        if wanted not in outputs:
            raise ModelLoadError(f"{where}: no output {wanted!r} (model.output_key); its outputs: "
                                 f"{', '.join(sorted(outputs))}")
        return wanted
    if len(outputs) != 1:
        raise ModelLoadError(f"{where} has {len(outputs)} outputs ({', '.join(sorted(outputs))}); set "
                             "model.output_key to the one that is a feature vector")
    return outputs[0]


def safe_variable_name(name: str) -> str:
    """A name Keras and the optimizer accept: `dense/kernel:0` -> `dense_kernel_0` (pure).

    Keras refuses `/` in variable names, and the optimizer's slot variables
    (`<name>_momentum`) become name scopes, which refuse `:`."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip("_.-")
    return cleaned or "variable"


def published_trainable(loaded: Any, used: list[Any]) -> list[bool]:
    """Which of the signature's variables may be trained.

    A SavedModel that publishes `trainable_variables` (TF Hub's reusable SavedModels,
    Keras exports) is taken at its word; otherwise each variable's own `trainable` flag
    (a `tf.Module`'s `tf.Variable(trainable=True)`) decides."""
    listed = getattr(loaded, "trainable_variables", None)
    if listed is None:
        return [bool(v.trainable) for v in used]
    ids = {id(v) for v in listed}
    return [id(v) in ids and bool(v.trainable) for v in used]


class RestoredVariable(keras.Variable):
    """A Keras variable that is a restored `tf.Variable` itself, not a copy of it."""

    def __init__(self, restored: Any, name: str, trainable: bool) -> None:
        self._restored = restored
        super().__init__(initializer=_unused_initializer, shape=tuple(restored.shape),
                         dtype=restored.dtype.name, trainable=trainable, name=name)

    def _initialize_with_initializer(self, initializer: Any) -> None:
        self._value = self._restored


def _unused_initializer(shape: Any, dtype: Any = None) -> Any:
    raise AssertionError("a restored variable is never initialised")  # pragma: no cover


@dataclass
class _Restored:
    """The loaded SavedModel and its signature, kept off the layer's tracked state: the
    serving model tracks the variables its function reads, not the whole loaded object."""

    loaded: Any
    function: Any
    input_name: str
    input_dtype: Any
    output_key: str
    output_shape: tuple[int, ...]


def restore(path: Path, signature: str, output_key: str | None) -> _Restored:
    """Load `path` and check its signature can be a base: one input, a fixed-size feature output."""
    import tensorflow as tf

    where = f"{path}: signature {signature!r}"
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # protobuf, missing variables, unknown ops
        reason = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise ModelLoadError(f"{path}: not a readable SavedModel ({type(exc).__name__}"
                             f"{': ' + reason if reason else ''})") from None
    if signature not in loaded.signatures:
        names = ", ".join(sorted(loaded.signatures)) or "none"
        raise ModelLoadError(f"{path}: SavedModel has no signature {signature!r} (model.signature); "
                             f"its signatures: {names}")
    function = loaded.signatures[signature]
    _, inputs = function.structured_input_signature
    if len(inputs) != 1:
        raise ModelLoadError(f"{where} must have exactly one input, has {sorted(inputs)}")
    (input_name, input_spec), = inputs.items()
    input_shape = input_spec.shape.as_list()[1:]
    if None in input_shape or not input_shape:
        raise ModelLoadError(f"{where}: input {input_name!r} has shape {input_spec.shape.as_list()}; "
                             "a fixed size per example is needed (the data is resized to it)")
    outputs = function.structured_outputs
    key = pick_output(list(outputs), output_key, where)
    shape = outputs[key].shape.as_list()
    if len(shape) < 2 or None in shape[1:]:
        raise ModelLoadError(f"{where}: output {key!r} has shape {shape}; a feature vector "
                             "(batch, features...) of fixed size is needed")
    return _Restored(loaded, function, input_name, input_spec.dtype, key, tuple(int(d) for d in shape[1:]))


@keras.saving.register_keras_serializable(package="tfrollout")
class SignatureFeatures(keras.layers.Layer):
    """Calls a SavedModel signature; its weights are the variables that signature reads.

    Always inference-mode: a signature has no training switch, so batch statistics
    inside it stay the source's (as a frozen Keras base is called)."""

    def __init__(self, path: str, signature: str = "serving_default", output_key: str | None = None,
                 sha256: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_path, self.signature, self.output_key, self.sha256 = str(path), signature, output_key, sha256
        restored = restore(Path(path), signature, output_key)
        self._restored = restored
        used = list(restored.function.variables)
        self._may_train = published_trainable(restored.loaded, used)  # fixed: Keras flips the flags
        names = unique_names([safe_variable_name(v.name) for v in used])
        self.restored_names = [str(v.name) for v in used]  # as the SavedModel names them
        self.restored = [RestoredVariable(v, name, flag)
                         for v, name, flag in zip(used, names, self._may_train, strict=True)]
        self.built = True

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self._restored.output_shape

    @property
    def input_dtype(self) -> Any:
        return self._restored.input_dtype

    @property
    def may_train(self) -> list[bool]:
        """Per variable (signature order): whether the SavedModel lets it be trained."""
        return list(self._may_train)

    def train_only(self, chosen: list[int]) -> None:
        """Make exactly the variables at `chosen` trainable (and the layer with them)."""
        self.trainable = True
        keep = set(chosen)
        for i, (variable, allowed) in enumerate(zip(self.restored, self._may_train, strict=True)):
            variable.trainable = allowed and i in keep

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        restored = self._restored
        outputs = restored.function(**{restored.input_name: tf.cast(inputs, restored.input_dtype)})
        return tf.cast(outputs[restored.output_key], self.compute_dtype)

    def compute_output_spec(self, inputs: Any) -> Any:
        return keras.KerasTensor((inputs.shape[0], *self.feature_shape), dtype=self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "path": self.source_path, "signature": self.signature,
                "output_key": self.output_key, "sha256": self.sha256}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SignatureFeatures:
        """Re-read the source SavedModel (a saved `.keras` stores its variables, not its graph);
        one that changed since the model was trained is refused, not silently mixed in."""
        path = Path(config["path"])
        expected = config.get("sha256")
        if expected is not None and (not path.is_dir() or file_digest(path) != expected):
            raise ModelLoadError(f"{path}: the source SavedModel this model was trained from is missing or "
                                 "changed since (sha256 differs); re-run the transfer stage")
        return cls(**config)


def unique_names(names: list[str]) -> list[str]:
    """`names` with repeats numbered (`kernel`, `kernel_1`): two scopes may both hold a `kernel` (pure)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        out.append(name if count == 0 else f"{name}_{count}")
    return out


def build_base(path: Path, signature: str, output_key: str | None, sha256: str | None) -> Any:
    """inputs -> SignatureFeatures: the Keras model the pipeline uses as the base."""
    layer = SignatureFeatures(str(path.resolve()), signature, output_key, sha256, name=LAYER_NAME)
    spec_shape = layer._restored.function.structured_input_signature[1][layer._restored.input_name].shape
    inputs = keras.Input(tuple(spec_shape.as_list()[1:]), name=safe_input_name(layer._restored.input_name))
    return keras.Model(inputs, layer(inputs), name="saved_model_base")


def safe_input_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "inputs"


def signature_layer(model: Any) -> SignatureFeatures | None:
    """The SignatureFeatures layer of a base (None: a Keras base)."""
    found = [layer for layer in getattr(model, "layers", []) if isinstance(layer, SignatureFeatures)]
    return found[0] if len(found) == 1 else None


def check_gradients(layer: SignatureFeatures, chosen: list[int]) -> None:
    """Refuse to train variables the signature's function gives no gradient for.

    Connectivity does not depend on the values, so one zero batch decides it: a
    function saved without gradient support, or one that stops them, gives None."""
    import tensorflow as tf

    restored = layer._restored
    shape = restored.function.structured_input_signature[1][restored.input_name].shape
    batch = tf.zeros((2, *shape.as_list()[1:]), restored.input_dtype)
    variables = [layer.restored[i].value for i in chosen]
    try:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.cast(layer(batch), tf.float32)))
        grads = tape.gradient(loss, variables)
    except (LookupError, ValueError, TypeError, tf.errors.OpError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise TransferError(f"{layer.source_path}: signature {layer.signature!r} cannot be differentiated "
                            f"({type(exc).__name__}{': ' + reason if reason else ''}); use "
                            "transfer.strategy = \"feature-extraction\"") from None
    missing = [layer.restored_names[i] for i, grad in zip(chosen, grads, strict=True) if grad is None]
    if missing:
        raise TransferError(f"{layer.source_path}: signature {layer.signature!r} gives no gradient for "
                            f"{len(missing)} of the {len(chosen)} variables to train ({', '.join(missing[:5])}"
                            f"{', ...' if len(missing) > 5 else ''}): its function cannot be fine-tuned; use "
                            "transfer.strategy = \"feature-extraction\" (or leave them out of "
                            "transfer.unfreeze_variables)")


def plan_training(layer: SignatureFeatures, strategy: str, patterns: list[str] | None,
                  fine_tune_epochs: int) -> list[int]:
    """The variables `strategy` will train (positions), checked before anything trains:
    a strategy that needs trainable variables and finds none, or finds no gradient for
    them, stops here instead of after the head's epochs."""
    if strategy == "feature-extraction" or (strategy == "fine-tune" and (fine_tune_epochs == 0 or patterns == [])):
        return []
    where = f"{layer.source_path} (signature {layer.signature!r})"
    if not any(layer.may_train):
        raise TransferError(f"transfer.strategy = \"{strategy}\" trains the SavedModel's variables, but {where} "
                            f"has no trainable variables ({len(layer.restored)} variables, none published as "
                            "trainable); use transfer.strategy = \"feature-extraction\"")
    from pipeline.model.freeze import variables_to_train

    chosen = variables_to_train(layer.restored_names, layer.may_train,
                                None if strategy == "full" else patterns, where)
    check_gradients(layer, chosen)
    return chosen


def holds_saved_model(model: Any) -> bool:
    """Whether a SavedModel base is anywhere inside `model` (nested models included)."""
    return any(isinstance(layer, SignatureFeatures) or holds_saved_model(layer)
               for layer in getattr(model, "layers", []))

"""Reading a source model from disk: `.keras`, legacy `.h5`, or a SavedModel directory.

Every failure becomes one `ModelLoadError` line naming the file, because a
TensorFlow/h5py/zip traceback tells a user nothing about what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ModelLoadError
from pipeline.model.digest import file_digest

KERAS_SUFFIXES = {".keras": "keras", ".h5": "h5", ".hdf5": "h5"}


@dataclass
class SourceModel:
    """A loaded model plus what later stages need to know about it."""

    path: Path
    format: str  # "keras" | "h5" | "saved_model"
    model: Any  # keras.Model (for SavedModels: a Model around a SignatureFeatures layer)
    sha256: str
    cut_layer: str | None  # None for SavedModels: the whole signature is the base


def detect_format(path: Path) -> str:
    """Which loader a path needs; a clear error for anything else."""
    if not path.exists():
        hint = ""
        if path.parent.name == "demo" and path.name == "source_model.keras":
            hint = f" (the demo's source model: make it with `tfrollout demo source-model --out {path}`)"
        raise ModelLoadError(f"model not found: {path}{hint}")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise ModelLoadError(f"{path}: a directory but not a SavedModel (no saved_model.pb inside)")
    fmt = KERAS_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ModelLoadError(f"{path}: unsupported model file extension {path.suffix or '(none)'!r}; "
                             "expected .keras, .h5 or a SavedModel directory")
    return fmt


JSON_MEMBER_LIMIT = 64 * 2**20  # Keras reads config.json / metadata.json whole: 64 MiB is ~1000x a real one
RATIO_LIMIT = 200  # weights barely compress (~1.1x); a member that inflates 200x is a bomb
RATIO_CHECKED_ABOVE = 16 * 2**20  # small members may compress well (JSON ~10x): not worth a limit


def archive_limit_problem(members: list[tuple[str, int, int]]) -> str | None:
    """Why a `.keras` archive's members (name, size, compressed size) are refused, or None (pure).

    Checked from the central directory before anything is decompressed, so a 2 MB file
    holding a 1 GiB `config.json` costs neither the time nor the memory of inflating it."""
    for name, size, packed in members:
        if name.endswith(".json") and size > JSON_MEMBER_LIMIT:
            return f"member {name} would inflate to {size:,} bytes (limit {JSON_MEMBER_LIMIT:,} for JSON)"
        if size > RATIO_CHECKED_ABOVE and size > RATIO_LIMIT * max(packed, 1):
            return (f"member {name} would inflate {size / max(packed, 1):,.0f}x ({packed:,} -> {size:,} bytes; "
                    f"limit {RATIO_LIMIT}x)")
    return None


def check_container(path: Path, fmt: str) -> None:
    """A `.keras` file is a zip and an `.h5` file is HDF5: a truncated or foreign file is named as such.

    Keras reports a damaged zip as "File not found", which sends users looking for a
    file that is right there.
    """
    import zipfile

    size = path.stat().st_size
    if fmt == "keras":
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path}: not a valid .keras archive (not a complete zip file: {size} bytes, "
                                 "truncated or not a .keras model)")
        try:
            with zipfile.ZipFile(path) as archive:
                problem = archive_limit_problem([(i.filename, i.file_size, i.compress_size)
                                                 for i in archive.infolist()])
                if problem is not None:
                    raise ModelLoadError(f"{path}: refused: {problem}; not loaded")
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelLoadError(f"{path}: not a valid .keras archive (damaged zip: {exc})") from None
        if damaged is not None:
            raise ModelLoadError(f"{path}: not a valid .keras archive ({damaged} is damaged)")
        return
    import h5py  # type: ignore[import-untyped]

    if not h5py.is_hdf5(path):
        raise ModelLoadError(f"{path}: not a valid HDF5 Keras model (no HDF5 signature; {size} bytes)")


def _load_keras(path: Path, fmt: str) -> Any:
    check_container(path, fmt)
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # zipfile, h5py, json, deserialization errors
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        kind = "a valid .keras archive" if fmt == "keras" else "a valid HDF5 Keras model"
        raise ModelLoadError(f"{path}: not {kind} ({reason})") from None


def _load_saved_model(path: Path, signature: str, output_key: str | None, sha256: str) -> Any:
    """The chosen signature output as a Keras base whose variables are the SavedModel's own
    (see saved_model_base: trainable when the strategy asks, exported as trained)."""
    from pipeline.model.saved_model_base import build_base

    return build_base(path, signature, output_key, sha256)


PASS_THROUGH_AFTER_CLASSIFIER = ("Dropout", "Activation", "Softmax", "ReLU")
PASS_THROUGH_BEFORE_CLASSIFIER = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                                  "GaussianDropout", "AlphaDropout")


def classifier_input_layer(model: Any) -> str | None:
    """The layer that feeds the model's classifier: the input of its last Dense layer.

    Walks back from the output over what may follow a classifier (activation, dropout),
    takes the Dense layer found there, then skips the dropout-like layers in front of
    it: `avg_pool` for ResNet50, `global_average_pooling2d` for MobileNetV2, `features`
    for the demo. None when the model does not end in a Dense classifier.
    """
    layers = list(model.layers)
    i = len(layers) - 1
    while i >= 0 and type(layers[i]).__name__ in PASS_THROUGH_AFTER_CLASSIFIER:
        i -= 1
    if i < 0 or type(layers[i]).__name__ not in ("Dense", "EinsumDense"):
        return None
    j = i - 1
    while j >= 0 and type(layers[j]).__name__ in PASS_THROUGH_BEFORE_CLASSIFIER:
        j -= 1
    return layers[j].name if j >= 0 and type(layers[j]).__name__ != "InputLayer" else None


def resolve_cut_layer(model: Any, requested: str | None, path: Path) -> str:
    """The layer whose output feeds the new head (default: the one feeding the classifier)."""
    names = [layer.name for layer in model.layers]
    if requested is None:
        found = classifier_input_layer(model)
        if found is not None:
            return found
        if len(names) < 3:
            raise ModelLoadError(f"{path}: model has {len(names)} layers; too few to cut off a head")
        return names[-2]
    if requested not in names:
        shown = ", ".join(names[-8:])
        raise ModelLoadError(f"{path}: no layer named {requested!r} to cut at (last layers: {shown})")
    if requested == names[0]:
        raise ModelLoadError(f"{path}: cut layer {requested!r} is the input layer; nothing to reuse")
    return requested


def load_source_model(path: Path, cut_layer: str | None, *, signature: str = "serving_default",
                      output_key: str | None = None) -> SourceModel:
    """Load any supported format and check the cut point exists (`signature`/`output_key`:
    which SavedModel function and output is the base; ignored for Keras files)."""
    fmt = detect_format(path)
    if fmt == "saved_model":
        if cut_layer is not None:
            raise ModelLoadError(f"{path}: a SavedModel directory has no named layers to cut at "
                                 f"({cut_layer!r}); unset model.cut_layer to use its output as features")
        digest = file_digest(path)
        return SourceModel(path, fmt, _load_saved_model(path, signature, output_key, digest), digest, None)
    model = _load_keras(path, fmt)
    return SourceModel(path, fmt, model, file_digest(path), resolve_cut_layer(model, cut_layer, path))

"""Config sections of the TensorFlow side: the source model, the target-domain data, the
augmentation and the transfer itself (what `pipeline/model` reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import _Section
from pipeline.preprocess_modes import resolve as resolve_preprocess


class ModelConfig(_Section):
    """The local source model and where to cut it into base + head."""

    path: Path = Path("demo/source_model.keras")
    cut_layer: str | None = Field(
        default=None,
        description="Layer whose output feeds the new head; unset (the default, or \"\" from "
                    "--set/env/TOML) = the layer feeding the model's last Dense classifier (e.g. "
                    "avg_pool in ResNet50), else the layer before the last; a SavedModel base needs it unset.",
    )
    signature: str = Field(
        default="serving_default", min_length=1,
        description="SavedModel directory: the signature whose output is the base (a TF Hub feature-vector "
                    "model's serving_default, say); ignored for .keras/.h5.",
    )
    output_key: str | None = Field(
        default=None,
        description="SavedModel directory: which output of model.signature is the feature vector; unset = "
                    "its only output (a signature with several outputs then stops the load, listing them).",
    )

    @field_validator("cut_layer", "output_key")
    @classmethod
    def _empty_means_unset(cls, value: str | None) -> str | None:
        return None if value is None or value.strip() == "" else value


class DataConfig(_Section):
    """Target-domain data: the built-in digits demo, an image folder, an .npz, or TFRecord files."""

    source: Literal["demo", "dir", "npz", "tfrecord"] = "demo"
    path: Path | None = Field(default=None, description="dir: the folder; npz: the file; tfrecord: a "
                              "file, a folder or a glob ('data/*.tfrecord').")
    image_feature: str = Field(default="image/encoded", min_length=1,
                               description="tfrecord: the feature holding the encoded image (JPEG/PNG bytes).")
    label_feature: str = Field(default="image/class/label", min_length=1,
                               description="tfrecord: the feature holding the class label (int64 or string).")
    labels_per_class: int = Field(default=1, ge=1, description="Demo: labelled examples per class.")
    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    seed: int = 0
    preprocess: str = Field(
        default="none", description="How raw pixels (0-255) become model inputs, baked into the exported "
        "signature: none (the loaders' [0, 1] scale, no layer), raw, unit, symmetric, caffe, torch, or a "
        "keras.applications family name (resnet50, mobilenet_v2, efficientnet, ...).")

    @field_validator("preprocess")
    @classmethod
    def _known_preprocess(cls, value: str) -> str:
        resolve_preprocess(value)  # ValueError names the choices
        return value

    @field_validator("path")
    @classmethod
    def _path_not_empty(cls, value: Path | None) -> Path | None:
        if value is not None and str(value).strip() == "":
            raise ValueError("must not be empty")
        return value


class AugmentConfig(_Section):
    """Random changes to the training images, as Keras preprocessing layers: every factor 0
    and flip "none" (the default) = no augmentation. Only the training stream is changed:
    never the held-out or validation rows, never the exported model."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    rotation: float = Field(default=0.0, ge=0.0, le=1.0, description="Up to ± this fraction of a full turn.")
    zoom: float = Field(default=0.0, ge=0.0, lt=1.0, description="Up to ± this fraction of the size.")
    translation: float = Field(default=0.0, ge=0.0, le=1.0, description="Up to ± this fraction of the size.")
    contrast: float = Field(default=0.0, ge=0.0, le=1.0, description="Contrast scaled by 1 ± up to this.")
    fill: Literal["reflect", "constant", "nearest", "wrap"] = Field(
        default="reflect", description="What fills pixels a rotation, zoom or shift uncovers (constant: 0).")

    @property
    def enabled(self) -> bool:
        return self.flip != "none" or any((self.rotation, self.zoom, self.translation, self.contrast))


class TransferConfig(_Section):
    """How the source model is adapted to the target domain."""

    strategy: Literal["feature-extraction", "fine-tune", "full"] = "fine-tune"
    head_units: int = Field(default=0, ge=0, description="Hidden units in the new head; 0 = none.")
    head_epochs: int = Field(default=60, ge=1, le=100_000)
    fine_tune_epochs: int = Field(default=20, ge=0, le=100_000)
    learning_rate: float = Field(default=1e-2, gt=0.0)
    fine_tune_learning_rate: float = Field(default=1e-4, gt=0.0)
    unfreeze_top: int = Field(default=2, ge=0, description="Fine-tune: base layers (with weights) to unfreeze.")
    unfreeze_after: str | None = Field(
        default=None, description="Fine-tune: unfreeze every layer after this one (overrides unfreeze_top)."
    )
    unfreeze_variables: list[str] | None = Field(
        default=None, description="Fine-tune of a SavedModel base (it has no layers): regular expressions "
        "searched in its variable names (e.g. [\"^block_4/\", \"head\"]); the matching trainable variables "
        "are fine-tuned. Unset = all its trainable variables; [] = none. Not for Keras bases.",
    )
    batch_size: int = Field(default=32, ge=1, le=65_536)
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    patience: int = Field(default=20, ge=1, le=100_000)
    cache_features: bool = True
    record_curves: bool = Field(default=True, description="Score the held-out set after every epoch of "
                                "both arms (the accuracy-vs-epochs/time picture; costs one predict per epoch).")
    seed: int = 0
    baseline: bool = True
    baseline_max_examples: int | None = Field(
        default=None, ge=2, description="Train the from-scratch baseline on at most this many labelled "
        "examples (a stratified, seeded subset; the report says so). Unset: all of them.")
    baseline_epochs: int | None = Field(
        default=None, ge=1, le=100_000, description="From-scratch epochs; default head_epochs + "
        "fine_tune_epochs, the transfer arm's budget (a fair baseline gets no fewer).")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    augment_copies: int = Field(
        default=0, ge=0, le=1000, description="With augmentation: 0 = new random changes every epoch "
        "(the frozen base then runs every epoch: no feature cache); K = K augmented copies of the "
        "labelled set made once, their frozen-base features cached beside the originals'.")

    @field_validator("unfreeze_variables")
    @classmethod
    def _patterns_compile(cls, value: list[str] | None) -> list[str] | None:
        import re

        for pattern in value or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression ({exc})") from None
        return value

    @property
    def scratch_epochs(self) -> int:
        """The baseline's epoch budget: as set, else the same total as the transfer arm."""
        if self.baseline_epochs is not None:
            return self.baseline_epochs
        return self.head_epochs + (self.fine_tune_epochs if self.strategy == "fine-tune" else 0)

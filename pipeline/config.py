"""Typed deploy configuration: one TOML file, overridden by environment and flags.

Precedence (lowest to highest): defaults < TOML file < `TFROLLOUT_<SECTION>__<KEY>`
environment variables < `--set section.key=value` flags. Every layer is merged as
plain dicts first and validated once, so an error always names the dotted key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError
from pipeline.preprocess_modes import resolve as resolve_preprocess

ENV_PREFIX = "TFROLLOUT_"
ENV_NESTING = "__"
DEFAULT_CONFIG_FILE = Path("deploy.toml")
# Old key -> new key. An old key still works for one release, with a warning.
RENAMED_KEYS: dict[str, str] = {"verify.target": "verify.endpoint"}


class _Section(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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


class ExportConfig(_Section):
    """Where and how the TF Serving SavedModel is written."""

    root: Path = Path("exports")
    model_name: str = Field(default="digits", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: int | None = Field(default=None, ge=1)
    input_name: str = Field(default="inputs", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    output_name: str = Field(default="probabilities", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    warmup_records: int = Field(default=8, ge=0, le=1000)
    golden_size: int = Field(default=64, ge=1, le=100_000)
    parity_atol: float = Field(default=1e-5, gt=0.0)
    quantize: Literal["none", "float16", "int8"] = Field(
        default="none", description="float16: weights stored as float16, compute float32; int8: Keras "
        "quantize('int8') (Dense/EinsumDense/Embedding kernels only). The gate's max_quantization_drop "
        "bounds the accuracy cost.")
    version_from_store: bool = Field(
        default=True, description="Number a new version one above everything the store (storage.uri) "
        "holds, pushes or reserves and reserve it there, so fresh checkouts sharing a store never collide; "
        "false = from the local export folder only (no store access at export).")


class StorageConfig(_Section):
    """Object storage for published versions (see `pipeline/storage`)."""

    uri: str = "file://store"
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "virtual", "path"] = "auto"
    create_bucket: bool = False
    multipart_threshold: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)
    multipart_chunksize: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024)
    max_concurrency: int = Field(default=10, ge=1)
    force: bool = Field(default=False, description="Overwrite a committed version with different content.")
    checksum_algorithm: Literal["SHA256", "CRC32", "none"] = Field(
        default="CRC32",
        description="S3 transport checksum per upload (the AWS CLI's default too); the file's sha256 is "
                    "always stored in metadata and the manifest, and checked on pull.")
    sign_payload: bool | None = Field(
        default=None,
        description="SHA256-sign request bodies (SigV4). Default: only when no transport checksum is "
                    "sent, as botocore does over HTTPS; true forces it, false never signs bodies.")
    max_attempts: int = Field(default=5, ge=1, le=20, description="S3 attempts per request (botocore retries).")
    connect_timeout_s: float = Field(default=5.0, gt=0.0)
    read_timeout_s: float = Field(default=60.0, gt=0.0)
    push_lock: bool = Field(default=True, description="Take a per-version lock (conditional write) so two "
                            "pushes of one version can never interleave their files.")
    lock_stale_s: float = Field(default=1800.0, gt=0.0, description="A push lock not renewed for this long "
                                "is a crashed push's and is taken over (`tfrollout storage unlock` removes one).")
    reservation_stale_s: float = Field(default=86400.0, gt=0.0, description="A version number reserved "
                                       "by an export that never pushed it is given up after this long (gc "
                                       "removes the reservation).")
    gc_grace_s: float = Field(default=3600.0, ge=0.0,
                              description="gc: uncommitted leftovers younger than this may be a live push.")


class GateConfig(_Section):
    """The quality bar a transferred model must clear before anything is exported or published.

    Accuracies and recalls are fractions (0.05 = 5 points). An unset threshold is not checked.
    """

    enforce: bool = Field(default=True, description="false: report failures but publish anyway "
                                                    "(recorded in the version's manifest).")
    min_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    min_class_recall: float | None = Field(default=None, ge=0.0, le=1.0)
    min_gain_over_baseline: float | None = Field(default=None, ge=-1.0, le=1.0,
                                                 description="Transfer minus from-scratch accuracy; may be < 0.")
    max_drop_vs_serving: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Refuse a candidate this much less accurate than the served stable version "
                    "(evaluated over gRPC on the same held-out set); skipped when nothing is served; "
                    "deferred to the rollout stage by a run that stops before rollout.")
    serving_deadline_s: float = Field(default=30.0, gt=0.0, le=3600.0)
    max_quantization_drop: float | None = Field(
        default=0.01, ge=0.0, le=1.0, description="With export.quantize: refuse a quantized model whose "
        "held-out accuracy is this much below the float32 model's (checked at export, before publishing).")


class VerifyConfig(_Section):
    """How served predictions are checked against the exported model's golden set."""

    endpoint: str | None = Field(default=None, description="host:port of the gRPC endpoint to verify, or "
                                 "several (`a:8500,b:8500`: each is verified; predict/loadtest balance round_robin) "
                                 "or `dns:///name:port`; default: the rollout target's (rollout.host:rollout.grpc_port).")
    label: str | None = None
    version: int | None = Field(default=None, ge=1)
    atol: float = Field(default=1e-5, ge=0.0, description=(
        "Absolute tolerance. The golden outputs come from the pipeline's TensorFlow (oneDNN kernels on "
        "x86); TF Serving's release build and this project's server run without oneDNN, and float32 "
        "kernels that differ in summation order disagree by ~1e-6 on the same model (1.1e-6 seen)."))
    rtol: float = Field(default=0.0, ge=0.0)
    deadline_s: float = Field(default=30.0, gt=0.0)
    min_agreement: float = Field(default=1.0, ge=0.0, le=1.0,
                                 description="Required top-1 agreement for classifier outputs.")
    allow_non_finite: list[str] = Field(
        default_factory=list, description="Outputs whose NaN/Inf values may match the golden set's (same value, "
        "same place); for every other output a NaN or Inf served is a failure, and push refuses a version "
        "whose golden outputs hold one.")
    batch_size: int = Field(default=1, ge=1, le=4096, description="Golden examples per Predict request. The golden "
                            "outputs are computed at batch 1; larger batches differ by ~1e-6.")
    signature: str = "serving_default"
    ca_cert: Path | None = Field(default=None, description="Server CA (PEM): enables TLS.")
    client_cert: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    client_key: Path | None = None
    server_name: str | None = Field(default=None, description="Override the TLS server name checked.")


class RolloutConfig(_Section):
    """Where and how a pushed version goes live (see `pipeline/rollout`, `pipeline/targets`)."""

    target: Literal["local", "docker", "swarm"] = "local"
    host: str = Field(default="127.0.0.1", description="Address the runtime's ports are reached at.")
    grpc_port: int = Field(default=8500, ge=1, le=65535)
    rest_port: int = Field(default=8501, ge=0, le=65535, description="0 disables REST (local target).")
    local_dir: Path | None = Field(default=None, description="Local target state; default <run.workdir>/serving.")
    model_base_path: str | None = Field(
        default=None, description="Passthrough: the server reads <this>/<model> itself (no delivery).")
    stable_label: str = "stable"
    canary_label: str = "canary"
    verify_canary: bool = True
    serving_args: list[str] = Field(default_factory=list, description="Extra model-server flags.")
    admin_api: Literal["auto", "token", "open"] = Field(
        default="auto", description="ModelService protection: 'token' starts the runtime with "
        "--admin_token_file and --model_base_path_prefix (tfrollout's model server only); 'auto' = token "
        "for the local target and tfrollout/* images, open for other images (e.g. tensorflow/serving).")
    start_timeout_s: float = Field(default=90.0, gt=0.0)
    deliver_timeout_s: float = Field(default=300.0, gt=0.0)
    load_timeout_s: float = Field(default=180.0, gt=0.0)
    label_timeout_s: float = Field(default=30.0, gt=0.0)
    verify_timeout_s: float = Field(default=120.0, gt=0.0)
    lock_stale_s: float = Field(default=1800.0, gt=0.0, description="A lock older than this is broken.")
    log_tail: int = Field(default=200, ge=1, le=100_000)
    # docker target
    docker_host: str | None = Field(default=None, description="unix://, tcp:// or ssh://; default DOCKER_HOST.")
    ssh_transport: Literal["paramiko", "openssh"] = Field(
        default="paramiko", description="ssh:// engines: 'paramiko' = one ssh login per process, every call a "
        "channel on it (host keys from ~/.ssh/known_hosts, unknown hosts refused; user, port, IdentityFile "
        "and ProxyCommand from ~/.ssh/config; keys from the agent); 'openssh' = the ssh binary, one login "
        "per connection (for what paramiko lacks: ProxyJump, ControlMaster, hardware keys).")
    tls_verify: bool | None = Field(default=None, description="Default: DOCKER_TLS_VERIFY.")
    cert_path: Path | None = Field(default=None, description="ca.pem/cert.pem/key.pem; default DOCKER_CERT_PATH.")
    image: str = "tensorflow/serving:2.18.0"
    pull_image: bool = Field(default=True, description="Pull the image when the engine lacks it.")
    container_name: str = Field(default="tfrollout-serving", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    volume: str = Field(default="tfrollout-models", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    network_mode: Literal["host", "published"] = "host"
    models_mount: str = "/models"
    # swarm target (rollout.image, grpc_port, host, serving_args, admin_api, start_timeout_s apply too)
    replicas: int = Field(default=2, ge=1, le=64, description="Swarm: replicas of the model service.")
    service_name: str = Field(default="tfrollout", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                              description="Swarm: service <service_name>-<model>; prefix of its configs/secrets.")
    swarm_monitor_s: float = Field(default=10.0, gt=0.0, description="Swarm update_config.monitor: how long "
                                   "a new replica must stay healthy before the next one is replaced.")
    swarm_health_interval_s: float = Field(default=2.0, gt=0.0, description="Swarm replica health check interval.")
    canary_port: int | None = Field(default=None, ge=1, le=65535, description="Swarm: gRPC port of the "
                                    "one-replica canary service checked before an update (default grpc_port + 1).")
    swarm_mode: Literal["replicated", "global"] = Field(
        default="replicated", description="Swarm: 'replicated' runs rollout.replicas anywhere; 'global' one replica "
        "per node (with host networking, every node's address then always has a replica behind it).")
    swarm_fetch: Literal["auto", "agent", "sidecar"] = Field(
        default="auto", description="Swarm: how replicas get the committed version. 'agent': a Python agent "
        "inside each replica fetches + verifies it (tfrollout/* images); 'sidecar': a global fetch service "
        "(rollout.fetch_image) fills a per-node volume the serving image mounts read-only (images without "
        "Python, e.g. tensorflow/serving; no drain on stop); 'auto' = agent for tfrollout/* images, else sidecar.")
    fetch_image: str | None = Field(
        default=None, description="Swarm sidecar mode: the fetch service's image (needs python3 >= 3.11); "
        "default rollout.image when that is a tfrollout/* image, else it must be set.")

    @model_validator(mode="after")
    def _labels_differ(self) -> RolloutConfig:
        if self.canary_label == self.stable_label:
            raise ValueError(f"canary_label and stable_label are both {self.stable_label!r}: an unverified "
                             "version would answer as stable")
        return self


class RunConfig(_Section):
    """Where the run record and intermediate artefacts live."""

    workdir: Path = Path(".tfrollout")


class DeployConfig(_Section):
    """The whole configuration, one section per concern."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    transfer: TransferConfig = TransferConfig()
    export: ExportConfig = ExportConfig()
    storage: StorageConfig = StorageConfig()
    gate: GateConfig = GateConfig()
    verify: VerifyConfig = VerifyConfig()
    rollout: RolloutConfig = RolloutConfig()
    run: RunConfig = RunConfig()
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Deprecated keys that were accepted (the CLI prints these once per command)."""
        return self._warnings


# --------------------------------------------------------------------------- merging


def parse_scalar(text: str) -> Any:
    """Read an override value as TOML (numbers, booleans, arrays), else as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"config override {dotted!r}: empty key")
    node = target
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`TFROLLOUT_EXPORT__MODEL_NAME=x` -> {"export": {"model_name": "x"}}."""
    merged: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or ENV_NESTING not in name:
            continue
        dotted = name[len(ENV_PREFIX) :].lower().replace(ENV_NESTING, ".")
        _set_dotted(merged, dotted, parse_scalar(raw))
    return merged


def flag_overrides(assignments: Iterable[str]) -> dict[str, Any]:
    """`["transfer.head_epochs=5"]` -> {"transfer": {"head_epochs": 5}}."""
    merged: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. transfer.head_epochs=50")
        _set_dotted(merged, key.strip(), parse_scalar(raw.strip()))
    return merged


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested dicts; values in `override` win."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def known_keys(path: tuple[Any, ...]) -> list[str]:
    """The keys the section at `path` (e.g. ("transfer",)) accepts; [] when it is no section."""
    model: Any = DeployConfig
    for name in path:
        field = model.model_fields.get(str(name)) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def unknown_key_hint(loc: tuple[Any, ...]) -> str:
    """`unknown key (did you mean transfer.head_epochs?)` for a misspelt key."""
    import difflib

    *parent, name = loc
    close = difflib.get_close_matches(str(name), known_keys(tuple(parent)), n=1, cutoff=0.6)
    where = ".".join(str(p) for p in parent)
    if close:
        return f"unknown key (did you mean {'.'.join([*map(str, parent), close[0]])}?)"
    known = known_keys(tuple(parent))
    return f"unknown key ({where or 'top level'} accepts: {', '.join(known)})" if known else "unknown key"


def format_validation_error(err: ValidationError) -> str:
    """One line per bad key: `transfer.head_epochs: Input should be ... (got -1)`."""
    parts = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"{key}: {unknown_key_hint(tuple(item['loc']))}")
            continue
        got = item.get("input")
        suffix = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        parts.append(f"{key}: {item['msg']}{suffix}")
    return "; ".join(parts)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file, reporting the file and the parser's reason on failure."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def apply_renames(merged: dict[str, Any]) -> list[str]:
    """Move values of renamed keys to their new names in place; one warning line per old key used."""
    warnings = []
    for old, new in RENAMED_KEYS.items():
        old_section, old_key = old.split(".")
        new_section, new_key = new.split(".")
        section = merged.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        target = merged.setdefault(new_section, {})
        if isinstance(target, dict) and new_key in target:
            raise ConfigError(f"{old} is the old name of {new}; set only {new}")
        value = section.pop(old_key)
        if isinstance(target, dict):
            target[new_key] = value
        warnings.append(f"config key {old} is deprecated and will be removed in the next release; "
                        f"use {new}")
    return warnings


def build_config(
    file_data: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    assignments: Iterable[str] = (),
) -> DeployConfig:
    """Merge the layers and validate once (pure: no file or process access)."""
    merged = deep_merge({}, file_data or {})
    merged = deep_merge(merged, env_overrides(environ or {}))
    merged = deep_merge(merged, flag_overrides(assignments))
    warnings = apply_renames(merged)
    try:
        config = DeployConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid config: {format_validation_error(exc)}") from None
    config.warnings.extend(warnings)
    return config


def load_config(path: Path | None = None, assignments: Iterable[str] = ()) -> DeployConfig:
    """Load `path` (or ./deploy.toml when present), then apply env and flag overrides."""
    if path is None:
        file_data = read_toml(DEFAULT_CONFIG_FILE) if DEFAULT_CONFIG_FILE.is_file() else {}
    else:
        file_data = read_toml(path)
    return build_config(file_data, os.environ, assignments)

"""Config sections between a trained model and a published version: the quality gate, the
SavedModel export and the object store it is pushed to."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.config.base import _Section


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

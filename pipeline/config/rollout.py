"""Config sections of the serving side: how served predictions are verified and where and
how a pushed version goes live."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import _Section


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

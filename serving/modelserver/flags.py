"""Command-line flags: all of tensorflow_model_server's (tfs_flags.TFS_FLAGS, same
names, types and defaults) plus this server's extensions, so a TF Serving command
line runs here unchanged. An unknown flag is an error.

Accepts both `--flag=value` and `--flag value`; booleans also accept bare `--flag`.

Extensions (tensorflow_model_server has no such flags):
  --host                        address both servers bind (default 0.0.0.0)
  --max_request_bytes           cap on one input tensor's declared size (shape × dtype
                                size) and on a REST body; also gRPC's receive limit
                                (+64 KiB framing) unless --grpc_channel_arguments sets
                                grpc.max_receive_message_length. Over it: RESOURCE_EXHAUSTED
                                (REST: 413). Default 256 MiB.
  --max_inflight_request_bytes  bytes of all requests being decoded or run at once
                                (received bytes + declared tensor bytes; REST: body +
                                parse estimate); a request beyond it is refused at once
                                with RESOURCE_EXHAUSTED (REST: 429). Default 1 GiB.
                                Peak memory measured: ≈3 × the request size (bench_memory).
  --max_run_bytes               tensors one session run may hold (activations, outputs;
                                measured per version, see runmem.py). A larger request
                                is run in parts along dimension 0 and the outputs joined;
                                one whose outputs (or single example) exceed it gets
                                RESOURCE_EXHAUSTED. 0 (default): 1/32 of
                                --max_inflight_request_bytes (32 MiB), at least 16 MiB.
                                Outputs may reach max(this, --max_request_bytes).
  --model_base_path_prefix      comma-separated roots (absolute paths or URL prefixes)
                                that base paths in a HandleReloadConfigRequest must lie
                                under, after resolving `..` and symlinks. Absent: the
                                parent directories of the startup config's base paths.
  --admin_token_file            file holding a bearer token: every ModelService RPC
                                (GetModelStatus, HandleReloadConfigRequest) then needs
                                gRPC metadata `authorization: Bearer <token>`
                                (else UNAUTHENTICATED). Predict, GetModelMetadata and
                                the REST API (read-only: status, metadata, predict) stay
                                open. See THREAT_MODEL.md.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

from .limits import DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_MAX_REQUEST_BYTES
from .tfs_flags import TFS_FLAGS, Effect

log = logging.getLogger("modelserver.flags")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "t", "yes", "y"}:
        return True
    if value in {"0", "false", "f", "no", "n"}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


@dataclass
class Flags:
    """Parsed flags (field names are the flag names)."""

    # tensorflow_model_server's flags, in main.cc's order
    port: int
    grpc_socket_path: str
    rest_api_port: int
    rest_api_num_threads: int
    rest_api_timeout_in_ms: int
    rest_api_enable_cors_support: bool
    enable_batching: bool
    allow_version_labels_for_unavailable_models: bool
    batching_parameters_file: str
    enable_per_model_batching_parameters: bool
    model_config_file: str
    model_config_file_poll_wait_seconds: int
    model_name: str
    model_base_path: str
    num_load_threads: int
    num_unload_threads: int
    max_num_load_retries: int
    load_retry_interval_micros: int
    file_system_poll_wait_seconds: int
    flush_filesystem_caches: bool
    tensorflow_session_parallelism: int
    tensorflow_session_config_file: str
    tensorflow_intra_op_parallelism: int
    tensorflow_inter_op_parallelism: int
    use_alts_credentials: bool
    ssl_config_file: str
    platform_config_file: str
    per_process_gpu_memory_fraction: float
    saved_model_tags: str
    grpc_channel_arguments: str
    grpc_max_threads: int
    enable_model_warmup: bool
    num_request_iterations_for_warmup: int
    version: bool
    monitoring_config_file: str
    remove_unused_fields_from_bundle_metagraph: bool
    prefer_tflite_model: bool
    num_tflite_pools: int
    num_tflite_interpreters_per_pool: int
    enable_signature_method_name_check: bool
    xla_cpu_compilation_enabled: bool
    xla_gpu_compilation_enabled: bool
    enable_profiler: bool
    thread_pool_factory_config_file: str
    mixed_precision: str
    skip_initialize_tpu: bool
    enable_grpc_healthcheck_service: bool
    enable_serialization_as_tensor_content: bool
    # extensions
    host: str
    max_request_bytes: int
    max_inflight_request_bytes: int
    max_run_bytes: int
    model_base_path_prefix: str | None
    admin_token_file: str

    @property
    def run_bytes(self) -> int:
        """--max_run_bytes, or (0) its default: 1/32 of --max_inflight_request_bytes.

        Why that small: glibc keeps a run's freed tensors in per-thread arenas, so a
        run grows RSS by more than its live peak; at a 128 MiB budget a 128 MiB Predict
        to the demo CNN grew the server 3.34× the request, at 32 MiB 3.02× (the gRPC
        receive's own peak). Small parts cost little: ~1,000 demo-CNN rows a run, and
        MobileNetV2 on 2 cores runs no faster per row at batch 64 than at batch 3."""
        return self.max_run_bytes or max(16 << 20, -(-self.max_inflight_request_bytes // 32))

    @property
    def tags(self) -> list[str]:
        """MetaGraphDef tags to load (TF Serving: `serve` when --saved_model_tags is empty)."""
        return [t.strip() for t in self.saved_model_tags.split(",") if t.strip()] or ["serve"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfrollout-model-server", allow_abbrev=False,
        description="TF Serving-compatible model server (gRPC PredictionService/ModelService + REST).",
    )
    for f in TFS_FLAGS:
        text = f.help if f.effect is Effect.APPLIED else f"{f.help} [{f.effect.value}]"
        if f.kind is bool:
            p.add_argument(f"--{f.name}", type=_bool, nargs="?", const=True, default=f.default,
                           help=text)
        else:
            p.add_argument(f"--{f.name}", type=f.kind, default=f.default, help=text)
    p.add_argument("--host", default="0.0.0.0",
                   help="extension: address both servers bind (use 127.0.0.1 for loopback only)")
    p.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="extension: cap on one input's declared bytes and on a REST body")
    p.add_argument("--max_inflight_request_bytes", type=int, default=DEFAULT_MAX_INFLIGHT_BYTES,
                   help="extension: bytes of all requests in flight; beyond: RESOURCE_EXHAUSTED")
    p.add_argument("--max_run_bytes", type=int, default=0,
                   help="extension: tensors one session run may hold; larger requests run in parts "
                        "(0: 1/32 of --max_inflight_request_bytes)")
    p.add_argument("--model_base_path_prefix", default=None,
                   help="extension: comma-separated roots that reloaded base paths must lie under")
    p.add_argument("--admin_token_file", default="",
                   help="extension: bearer token file required by ModelService RPCs")
    return p


def parse_flags(argv: list[str] | None = None) -> Flags:
    """Parse and check; `--version` is answered by the caller before these checks matter."""
    ns = build_parser().parse_args(argv)
    flags = Flags(**vars(ns))
    if flags.version:
        return flags
    if not flags.model_config_file and not flags.model_base_path:
        raise SystemExit("Both --model_base_path and --model_config_file are empty!")
    for name in ("max_request_bytes", "max_inflight_request_bytes"):
        if getattr(flags, name) <= 0:
            raise SystemExit(f"--{name} must be a positive number of bytes, got {getattr(flags, name)}")
    if flags.max_run_bytes < 0:
        raise SystemExit(f"--max_run_bytes must be 0 (derived) or a positive number of bytes, "
                         f"got {flags.max_run_bytes}")
    for f in TFS_FLAGS:
        if f.refuse_if_set and getattr(flags, f.name) != f.default:
            raise SystemExit(f"--{f.name} is not implemented by this server; refusing to start "
                             "rather than serve without it")
    if flags.rest_api_port and flags.rest_api_port == flags.port:
        raise SystemExit("--rest_api_port cannot be same as --port; use a different port for HTTP/REST")
    return flags


def log_inert_flags(flags: Flags) -> None:
    """One line per flag set to a non-default value that does nothing here."""
    for f in TFS_FLAGS:
        if f.effect is not Effect.APPLIED and getattr(flags, f.name) != f.default:
            log.warning("--%s=%s has %s in this server", f.name, getattr(flags, f.name), f.effect.value)


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`a=1,b=x` → [("a", 1), ("b", "x")] (integers converted, as gRPC expects)."""
    out: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bad --grpc_channel_arguments item (want key=value): {item!r}")
        try:
            out.append((key.strip(), int(value)))
        except ValueError:
            out.append((key.strip(), value.strip()))
    return out

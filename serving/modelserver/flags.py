"""Command-line flags with tensorflow_model_server's names, defaults and meaning,
so the rollout stage can drive this server and the official image identically.

Accepts both `--flag=value` and `--flag value`; booleans also accept bare `--flag`.

Extensions (tensorflow_model_server has no such flags):
  --host                        address both servers bind (default 0.0.0.0)
  --max_num_load_retries        retries of a failing version load (default 5)
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
from dataclasses import dataclass

from .limits import DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_MAX_REQUEST_BYTES


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

    port: int
    rest_api_port: int
    host: str
    model_name: str
    model_base_path: str
    model_config_file: str
    model_config_file_poll_wait_seconds: int
    file_system_poll_wait_seconds: int
    allow_version_labels_for_unavailable_models: bool
    enable_batching: bool
    batching_parameters_file: str
    monitoring_config_file: str
    enable_model_warmup: bool
    num_request_iterations_for_warmup: int
    rest_api_timeout_in_ms: int
    grpc_channel_arguments: str
    grpc_max_threads: int
    max_num_load_retries: int
    max_request_bytes: int
    max_inflight_request_bytes: int
    model_base_path_prefix: str | None
    admin_token_file: str


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tfrollout-model-server",
        description="TF Serving-compatible model server (gRPC PredictionService/ModelService + REST).",
    )

    def add_bool(name: str, default: bool) -> None:
        p.add_argument(name, type=_bool, nargs="?", const=True, default=default)

    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port; 0 disables REST")
    p.add_argument("--host", default="0.0.0.0",
                   help="address both servers bind (extension; use 127.0.0.1 for loopback only)")
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path", default="")
    p.add_argument("--model_config_file", default="",
                   help="ModelServerConfig text proto; overrides --model_name/--model_base_path")
    p.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                   help="re-read --model_config_file every N seconds (0: never)")
    p.add_argument("--file_system_poll_wait_seconds", type=int, default=1,
                   help="poll base paths for new versions every N s (0: once, <0: never)")
    add_bool("--allow_version_labels_for_unavailable_models", False)
    add_bool("--enable_batching", False)
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument("--monitoring_config_file", default="")
    add_bool("--enable_model_warmup", True)
    p.add_argument("--num_request_iterations_for_warmup", type=int, default=1)
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="Timeout for HTTP/REST API calls: a predict running longer answers "
                        "504 DEADLINE_EXCEEDED (<=0: no timeout)")
    p.add_argument("--grpc_channel_arguments", default="",
                   help="comma-separated key=value gRPC server arguments, "
                        "e.g. grpc.max_receive_message_length=4194304")
    p.add_argument("--grpc_max_threads", type=int, default=64)
    p.add_argument("--max_num_load_retries", type=int, default=5,
                   help="retries of a failing version load (on later polls)")
    p.add_argument("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="extension: cap on one input's declared bytes and on a REST body")
    p.add_argument("--max_inflight_request_bytes", type=int, default=DEFAULT_MAX_INFLIGHT_BYTES,
                   help="extension: bytes of all requests in flight; beyond: RESOURCE_EXHAUSTED")
    p.add_argument("--model_base_path_prefix", default=None,
                   help="extension: comma-separated roots that reloaded base paths must lie under")
    p.add_argument("--admin_token_file", default="",
                   help="extension: bearer token file required by ModelService RPCs")
    return p


def parse_flags(argv: list[str] | None = None) -> Flags:
    ns = build_parser().parse_args(argv)
    flags = Flags(**vars(ns))
    if not flags.model_config_file and not flags.model_base_path:
        raise SystemExit("Both --model_base_path and --model_config_file are empty!")
    for name in ("max_request_bytes", "max_inflight_request_bytes"):
        if getattr(flags, name) <= 0:
            raise SystemExit(f"--{name} must be a positive number of bytes, got {getattr(flags, name)}")
    return flags


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

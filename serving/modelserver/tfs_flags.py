"""tensorflow_model_server's flags (model_servers/main.cc and server.h's Options):
name, type, default and what this server does with each, as data, so the parser,
the start-up notices and the test that every flag parses all read one list."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum


class Effect(Enum):
    """What setting a flag does here."""

    APPLIED = "applied"  # implemented with TF Serving's meaning
    NO_EFFECT = "no effect on a CPU-only host"  # hardware, caches, profiler
    NOT_IMPLEMENTED = "not implemented yet"  # accepted; a set value is logged (or refused)


@dataclass(frozen=True)
class FlagDef:
    """One flag: `kind` is bool, int, float or str (TF's int32/int64 both parse as int)."""

    name: str
    kind: type
    default: bool | int | float | str
    effect: Effect
    help: str
    refuse_if_set: bool = False  # security flags: serving without them would fail open


def _cpus() -> int:
    return os.cpu_count() or 1


A, N, X = Effect.APPLIED, Effect.NO_EFFECT, Effect.NOT_IMPLEMENTED

TFS_FLAGS: tuple[FlagDef, ...] = (
    FlagDef("port", int, 8500, A, "TCP port for the gRPC API; 0 disables it"),
    FlagDef("grpc_socket_path", str, "", A, "also serve gRPC on this UNIX socket path"),
    FlagDef("rest_api_port", int, 0, A, "HTTP/REST port; 0 disables REST"),
    FlagDef("rest_api_num_threads", int, 4 * _cpus(), A, "threads handling HTTP/REST requests"),
    FlagDef("rest_api_timeout_in_ms", int, 30000, A,
            "a REST predict running longer answers 504 (<=0: no timeout)"),
    FlagDef("rest_api_enable_cors_support", bool, False, A, "send CORS headers on REST responses"),
    FlagDef("enable_batching", bool, False, A, "enable batching"),
    FlagDef("allow_version_labels_for_unavailable_models", bool, False, A,
            "allow labels naming versions not loaded yet"),
    FlagDef("batching_parameters_file", str, "", A, "BatchingParameters text proto"),
    FlagDef("enable_per_model_batching_parameters", bool, False, X,
            "read batching_params.pbtxt from each SavedModel dir"),
    FlagDef("model_config_file", str, "", A,
            "ModelServerConfig text proto (overrides --model_name/--model_base_path)"),
    FlagDef("model_config_file_poll_wait_seconds", int, 0, A,
            "re-read --model_config_file every N seconds (0: never)"),
    FlagDef("model_name", str, "default", A, "name of the model (without --model_config_file)"),
    FlagDef("model_base_path", str, "", A, "path holding the model's version dirs"),
    FlagDef("num_load_threads", int, 0, A, "threads loading versions (0: one at a time)"),
    FlagDef("num_unload_threads", int, 0, A, "threads unloading versions (0: one at a time)"),
    FlagDef("max_num_load_retries", int, 5, A, "retries of a failing version load"),
    FlagDef("load_retry_interval_micros", int, 60_000_000, A,
            "least time between load attempts of a failing version (<0: no wait)"),
    FlagDef("file_system_poll_wait_seconds", int, 1, A,
            "poll base paths for versions every N s (0: once, <0: never)"),
    FlagDef("flush_filesystem_caches", bool, True, N, "flush file system caches after loads"),
    FlagDef("tensorflow_session_parallelism", int, 0, A,
            "threads for both TF pools (0: auto; intra/inter flags win)"),
    FlagDef("tensorflow_session_config_file", str, "", A,
            "ConfigProto text proto; its thread counts are applied"),
    FlagDef("tensorflow_intra_op_parallelism", int, 0, A, "threads within one op (0: auto)"),
    FlagDef("tensorflow_inter_op_parallelism", int, 0, A, "ops run at once (0: auto)"),
    FlagDef("use_alts_credentials", bool, False, X, "Google ALTS credentials (refused when set)",
            refuse_if_set=True),
    FlagDef("ssl_config_file", str, "", A,
            "SSLConfig text proto: TLS (client_verify: mutual TLS) on every gRPC listener"),
    FlagDef("platform_config_file", str, "", A,
            "PlatformConfigMap text proto; replaces the flags that configure model loading"),
    FlagDef("per_process_gpu_memory_fraction", float, 0.0, N, "GPU memory fraction"),
    FlagDef("saved_model_tags", str, "", A, "comma-separated MetaGraphDef tags (empty: serve)"),
    FlagDef("grpc_channel_arguments", str, "", A,
            "comma-separated key=value gRPC server arguments"),
    FlagDef("grpc_max_threads", int, 4 * _cpus(), A, "threads handling gRPC requests"),
    FlagDef("enable_model_warmup", bool, True, A, "replay assets.extra warmup requests on load"),
    FlagDef("num_request_iterations_for_warmup", int, 0, A,
            "times each warmup request runs (used if > 0)"),
    FlagDef("version", bool, False, A, "print the version and exit"),
    FlagDef("monitoring_config_file", str, "", A, "MonitoringConfig text proto"),
    FlagDef("remove_unused_fields_from_bundle_metagraph", bool, True, N,
            "drop unused MetaGraphDef fields"),
    FlagDef("prefer_tflite_model", bool, False, A,
            "serve model.tflite (tf.lite.Interpreter) when the version dir has one"),
    FlagDef("num_tflite_pools", int, _cpus(), A, "TFLite interpreter pools: requests run at once"),
    FlagDef("num_tflite_interpreters_per_pool", int, 1, A,
            "TFLite interpreters per pool: a request's rows are split over them"),
    FlagDef("enable_signature_method_name_check", bool, False, A,
            "Predict requires method_name tensorflow/serving/predict"),
    FlagDef("xla_cpu_compilation_enabled", bool, False, N, "XLA:CPU JIT"),
    FlagDef("xla_gpu_compilation_enabled", bool, False, N, "XLA:GPU JIT"),
    FlagDef("enable_profiler", bool, True, A, "tensorflow.ProfilerService on the gRPC port"),
    FlagDef("thread_pool_factory_config_file", str, "", X, "ThreadPoolConfig text proto"),
    FlagDef("mixed_precision", str, "", N, "mixed precision mode"),
    FlagDef("skip_initialize_tpu", bool, False, N, "skip TPU initialization"),
    FlagDef("enable_grpc_healthcheck_service", bool, False, A, "serve grpc.health.v1.Health"),
    FlagDef("enable_serialization_as_tensor_content", bool, False, A,
            "Predict outputs in tensor_content instead of the typed *_val fields"),
)

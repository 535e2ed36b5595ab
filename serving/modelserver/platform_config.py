"""How each version is loaded (TF Serving's SessionBundleConfig), from the flags or from
--platform_config_file.

TF Serving builds one SessionBundleConfig from the flags, unless --platform_config_file
is set: then the file's PlatformConfigMap is used *instead*, and the flags that feed
the bundle config (batching, session threads, tags, warmup, TFLite) are ignored. Its
`tensorflow` entry holds a SavedModelBundleSourceAdapterConfig whose `legacy_config`
is the SessionBundleConfig. Neither message ships in tensorflow-serving-api, so they
are declared here (same package, names and field numbers) in a private descriptor
pool, which also resolves the `[type.googleapis.com/...]` Any in the text file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import platform_config_pb2

from serving import tfs_config
from serving.tfs_config import ConfigFileError

from .flags import Flags
from .tfs_flags import TFS_FLAGS

log = logging.getLogger("modelserver.platform")

TENSORFLOW_PLATFORM = "tensorflow"
ADAPTER_CONFIG = "tensorflow.serving.SavedModelBundleSourceAdapterConfig"
# SessionBundleConfig fields acted on; every other set field is logged as inert
APPLIED_FIELDS = {"session_config", "batching_parameters", "saved_model_tags", "enable_model_warmup",
                  "model_warmup_options", "prefer_tflite_model", "num_tflite_interpreters_per_pool",
                  "num_tflite_pools"}
THREAD_FIELDS = {"intra_op_parallelism_threads", "inter_op_parallelism_threads"}
# flags TF Serving ignores when --platform_config_file is set
BUNDLE_FLAGS = ("enable_batching", "batching_parameters_file", "tensorflow_session_parallelism",
                "tensorflow_session_config_file", "tensorflow_intra_op_parallelism",
                "tensorflow_inter_op_parallelism", "per_process_gpu_memory_fraction",
                "saved_model_tags", "enable_model_warmup", "num_request_iterations_for_warmup",
                "remove_unused_fields_from_bundle_metagraph", "prefer_tflite_model",
                "num_tflite_pools", "num_tflite_interpreters_per_pool")

DEFAULTS = {f.name: f.default for f in TFS_FLAGS}


@dataclass(frozen=True)
class BundleOptions:
    """What loading a version needs (0 threads: TF's automatic choice)."""

    tags: tuple[str, ...] = ("serve",)
    enable_model_warmup: bool = True
    warmup_iterations: int = 0
    prefer_tflite_model: bool = False
    num_tflite_pools: int = 1
    num_tflite_interpreters_per_pool: int = 1
    batching: Any = None  # BatchingParameters message, None: no batching
    intra_op_threads: int = 0
    inter_op_threads: int = 0

    @classmethod
    def from_flags(cls, flags: Flags) -> BundleOptions:
        return cls(tags=tuple(flags.tags), enable_model_warmup=flags.enable_model_warmup,
                   warmup_iterations=flags.num_request_iterations_for_warmup,
                   prefer_tflite_model=flags.prefer_tflite_model,
                   num_tflite_pools=flags.num_tflite_pools,
                   num_tflite_interpreters_per_pool=flags.num_tflite_interpreters_per_pool)

    @classmethod
    def from_session_bundle_config(cls, cfg) -> BundleOptions:
        """TF Serving's reading: empty tags mean `serve`; warmup only when enabled."""
        threads = cfg.session_config
        return cls(tags=tuple(cfg.saved_model_tags) or ("serve",),
                   enable_model_warmup=cfg.enable_model_warmup,
                   warmup_iterations=cfg.model_warmup_options.num_request_iterations.value,
                   prefer_tflite_model=cfg.prefer_tflite_model,
                   num_tflite_pools=cfg.num_tflite_pools,
                   num_tflite_interpreters_per_pool=cfg.num_tflite_interpreters_per_pool,
                   batching=cfg.batching_parameters if cfg.HasField("batching_parameters") else None,
                   intra_op_threads=threads.intra_op_parallelism_threads,
                   inter_op_threads=threads.inter_op_parallelism_threads)


def _pool() -> descriptor_pool.DescriptorPool:
    """A pool with TF's config.proto (and its imports) plus the serving messages below."""
    from tensorflow.core.protobuf import config_pb2, named_tensor_pb2

    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add_file(fd) -> None:
        if fd.name in added:
            return
        for dep in fd.dependencies:
            add_file(dep)
        pool.AddSerializedFile(fd.serialized_pb)
        added.add(fd.name)

    for module in (wrappers_pb2, config_pb2, named_tensor_pb2):
        add_file(module.DESCRIPTOR)
    pool.Add(tfs_config.batching_parameters_file())
    pool.Add(_serving_file())
    return pool


def _serving_file() -> descriptor_pb2.FileDescriptorProto:
    """session_bundle_config.proto + saved_model_bundle_source_adapter.proto, as declared
    by TF Serving (field numbers matter for the binary Any payload); BatchingParameters
    comes from tfs_config's declaration."""
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(
        name="tfrollout/platform_config_messages.proto", package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto", "tensorflow/core/protobuf/config.proto",
                    "tensorflow/core/protobuf/named_tensor.proto", tfs_config.BATCHING_FILE])

    def add(msg, name: str, number: int, ftype: int, type_name: str = "", repeated: bool = False) -> None:
        f = msg.field.add(name=name, number=number, type=ftype,
                          label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
        if type_name:
            f.type_name = type_name

    i32 = ".google.protobuf.Int32Value"
    mw = fd.message_type.add(name="ModelWarmupOptions")
    add(mw, "num_request_iterations", 1, F.TYPE_MESSAGE, i32)
    add(mw, "num_model_warmup_threads", 2, F.TYPE_MESSAGE, i32)
    sb = fd.message_type.add(name="SessionBundleConfig")
    add(sb, "session_target", 1, F.TYPE_STRING)
    add(sb, "session_config", 2, F.TYPE_MESSAGE, ".tensorflow.ConfigProto")
    add(sb, "batching_parameters", 3, F.TYPE_MESSAGE, ".tensorflow.serving.BatchingParameters")
    add(sb, "session_run_load_threadpool_index", 4, F.TYPE_MESSAGE, i32)
    add(sb, "experimental_transient_ram_bytes_during_load", 5, F.TYPE_UINT64)
    add(sb, "saved_model_tags", 6, F.TYPE_STRING, repeated=True)
    add(sb, "experimental_fixed_input_tensors", 778, F.TYPE_MESSAGE, ".tensorflow.NamedTensorProto",
        repeated=True)
    add(sb, "enable_model_warmup", 779, F.TYPE_BOOL)
    add(sb, "model_warmup_options", 780, F.TYPE_MESSAGE, ".tensorflow.serving.ModelWarmupOptions")
    add(sb, "enable_session_metadata", 781, F.TYPE_BOOL)
    add(sb, "remove_unused_fields_from_bundle_metagraph", 782, F.TYPE_BOOL)
    add(sb, "prefer_tflite_model", 783, F.TYPE_BOOL)
    add(sb, "resource_estimation_uses_validation_result", 784, F.TYPE_BOOL)
    add(sb, "num_tflite_interpreters", 785, F.TYPE_INT32)
    add(sb, "num_tflite_interpreters_per_pool", 786, F.TYPE_INT32)
    add(sb, "num_tflite_pools", 787, F.TYPE_INT32)
    ad = fd.message_type.add(name="SavedModelBundleSourceAdapterConfig")
    add(ad, "legacy_config", 1000, F.TYPE_MESSAGE, ".tensorflow.serving.SessionBundleConfig")
    return fd


_POOL: descriptor_pool.DescriptorPool | None = None


def pool() -> descriptor_pool.DescriptorPool:
    global _POOL
    if _POOL is None:
        _POOL = _pool()
    return _POOL


def message_class(full_name: str) -> type:
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))


def parse_platform_config_map(text: str):
    """PlatformConfigMap from text (Any payloads resolved by the private pool)."""
    return text_format.Parse(text, platform_config_pb2.PlatformConfigMap(), descriptor_pool=pool())


def read_platform_config_map(path: str):
    """The file's PlatformConfigMap; ConfigFileError in TF Serving's words."""
    return tfs_config.read_config_file(path, platform_config_pb2.PlatformConfigMap(),
                                       descriptor_pool=pool())


def session_bundle_config(platform_map, platform: str = TENSORFLOW_PLATFORM):
    """The SessionBundleConfig of `platform`, with TF Serving's errors for a missing entry
    or an adapter config it has no factory for."""
    configs = platform_map.platform_configs
    if platform not in configs:
        raise ConfigFileError(f"FAILED_PRECONDITION: PlatformConfigMap has no entry for platform {platform}")
    any_config = configs[platform].source_adapter_config
    type_name = any_config.type_url.rpartition("/")[2]
    if not type_name:
        raise ConfigFileError(f"INVALID_ARGUMENT: Invalid type_url on config proto: '{any_config.type_url}'")
    if type_name != ADAPTER_CONFIG:
        raise ConfigFileError(f"INVALID_ARGUMENT: Couldn't find factory for config proto message type "
                              f"{type_name}")
    adapter = message_class(ADAPTER_CONFIG)()
    if not any_config.Unpack(adapter):
        raise ConfigFileError("INVALID_ARGUMENT: Malformed content of Any.value")
    return adapter.legacy_config


def check_model_platforms(model_server_config, platform_map) -> None:
    """Every listed model's platform must have an entry (ServerCore's route check)."""
    if model_server_config.WhichOneof("config") != "model_config_list":
        return
    for model in model_server_config.model_config_list.config:
        if model.model_platform not in platform_map.platform_configs:
            raise ConfigFileError(f"INVALID_ARGUMENT: Model {model.name} requests unsupported platform "
                                  f"{model.model_platform}")


def inert_fields(cfg) -> list[str]:
    """Set SessionBundleConfig fields this server does not act on (for one warning)."""
    out = [f.name for f, _ in cfg.ListFields() if f.name not in APPLIED_FIELDS]
    out += [f"session_config.{f.name}" for f, _ in cfg.session_config.ListFields()
            if f.name not in THREAD_FIELDS]
    return out


def bundle_options(flags: Flags, model_server_config=None) -> BundleOptions:
    """From --platform_config_file when set (flags feeding the bundle ignored, as in TF
    Serving), else from the flags."""
    if not flags.platform_config_file:
        return BundleOptions.from_flags(flags)
    platform_map = read_platform_config_map(flags.platform_config_file)
    if model_server_config is not None:
        check_model_platforms(model_server_config, platform_map)
    cfg = session_bundle_config(platform_map)
    others = sorted(set(platform_map.platform_configs) - {TENSORFLOW_PLATFORM})
    if others:
        log.warning("--platform_config_file: platforms %s have no loader here; models must use "
                    "platform %s", ",".join(others), TENSORFLOW_PLATFORM)
    ignored = [name for name in BUNDLE_FLAGS
               if getattr(flags, name) != DEFAULTS[name]]
    if ignored:
        log.warning("--platform_config_file is set: ignoring --%s (as TF Serving does)", ", --".join(ignored))
    inert = inert_fields(cfg)
    if inert:
        log.warning("--platform_config_file: no effect in this server: %s", ", ".join(inert))
    return BundleOptions.from_session_bundle_config(cfg)


def apply_threads(bundle: BundleOptions) -> None:
    """The SessionBundleConfig's thread counts (before TensorFlow starts; 0: automatic)."""
    import tensorflow as tf

    if bundle.intra_op_threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(bundle.intra_op_threads)
    if bundle.inter_op_threads > 0:
        tf.config.threading.set_inter_op_parallelism_threads(bundle.inter_op_threads)
    if bundle.intra_op_threads > 0 or bundle.inter_op_threads > 0:
        log.info("TensorFlow threads from --platform_config_file: intra_op=%d inter_op=%d",
                 bundle.intra_op_threads, bundle.inter_op_threads)

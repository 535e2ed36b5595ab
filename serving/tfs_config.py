"""TF Serving config files: build and parse the text protos tensorflow_model_server reads.

Shared by the rollout stage (which writes `models.config`, `batching.config`,
`monitoring.config`) and the model server (which reads them), so both sides use
the exact formats the official server accepts. Parsing is
`google.protobuf.text_format` on the official message types.

`model_server_config_pb2` ships with `tensorflow-serving-api`; the batching,
monitoring and TLS messages (`session_bundle_config.proto`, `monitoring_config.proto`,
`ssl_config.proto`) do not ship in that wheel, so when they are not importable the same messages
(same package, names and field numbers) are registered from a descriptor in a
private pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

# tensorflow_serving ships no type information: these aliases are Any to mypy
ModelServerConfig: TypeAlias = model_server_config_pb2.ModelServerConfig
ModelConfig: TypeAlias = model_server_config_pb2.ModelConfig

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


BATCHING_FILE = "tfrollout/session_bundle_config.proto"


def _add_field(msg: descriptor_pb2.DescriptorProto, name: str, number: int, ftype: int,
               type_name: str = "", repeated: bool = False) -> None:
    F = descriptor_pb2.FieldDescriptorProto
    f = msg.field.add(name=name, number=number, type=ftype, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        f.type_name = type_name


def batching_parameters_file() -> descriptor_pb2.FileDescriptorProto:
    """TF Serving's BatchingParameters (session_bundle_config.proto, field numbers as there):
    the one declaration for `--batching_parameters_file` and the platform config's
    SessionBundleConfig. Depends on google/protobuf/wrappers.proto only."""
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name=BATCHING_FILE, package="tensorflow.serving", syntax="proto3",
                                            dependency=["google/protobuf/wrappers.proto"])
    bp = fd.message_type.add(name="BatchingParameters")
    i64, s, b = ".google.protobuf.Int64Value", ".google.protobuf.StringValue", ".google.protobuf.BoolValue"
    _add_field(bp, "max_batch_size", 1, F.TYPE_MESSAGE, i64)
    _add_field(bp, "batch_timeout_micros", 2, F.TYPE_MESSAGE, i64)
    _add_field(bp, "max_enqueued_batches", 3, F.TYPE_MESSAGE, i64)
    _add_field(bp, "num_batch_threads", 4, F.TYPE_MESSAGE, i64)
    _add_field(bp, "thread_pool_name", 5, F.TYPE_MESSAGE, s)
    _add_field(bp, "allowed_batch_sizes", 6, F.TYPE_INT64, repeated=True)
    _add_field(bp, "pad_variable_length_inputs", 7, F.TYPE_BOOL)
    _add_field(bp, "enable_large_batch_splitting", 8, F.TYPE_MESSAGE, b)
    _add_field(bp, "max_execution_batch_size", 9, F.TYPE_MESSAGE, i64)
    return fd


def _private_messages() -> tuple[type, type]:
    """BatchingParameters and MonitoringConfig built from descriptors (no generated module)."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    F = descriptor_pb2.FieldDescriptorProto
    pool.Add(batching_parameters_file())
    monitoring = descriptor_pb2.FileDescriptorProto(
        name="tfrollout/monitoring_config.proto", package="tensorflow.serving", syntax="proto3")
    pc = monitoring.message_type.add(name="PrometheusConfig")
    _add_field(pc, "enable", 1, F.TYPE_BOOL)
    _add_field(pc, "path", 2, F.TYPE_STRING)
    mc = monitoring.message_type.add(name="MonitoringConfig")
    _add_field(mc, "prometheus_config", 1, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")
    pool.Add(monitoring)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")),
    )


try:  # pragma: no cover - depends on which protos the installed packages ship
    from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import BatchingParameters
except ImportError:
    BatchingParameters = None
try:  # pragma: no cover
    from tensorflow_serving.config.monitoring_config_pb2 import MonitoringConfig
except ImportError:
    MonitoringConfig = None
if BatchingParameters is None or MonitoringConfig is None:
    _bp, _mc = _private_messages()
    BatchingParameters = BatchingParameters or _bp
    MonitoringConfig = MonitoringConfig or _mc


def _private_ssl_config() -> type:
    """SSLConfig (config/ssl_config.proto) built from a descriptor: not in the wheel."""
    pool = descriptor_pool.DescriptorPool()
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(
        name="tfrollout/ssl_config.proto", package="tensorflow.serving", syntax="proto3")
    msg = fd.message_type.add(name="SSLConfig")
    for name, number, ftype in (("server_key", 1, F.TYPE_STRING), ("server_cert", 2, F.TYPE_STRING),
                                ("custom_ca", 3, F.TYPE_STRING), ("client_verify", 4, F.TYPE_BOOL)):
        msg.field.add(name=name, number=number, type=ftype, label=F.LABEL_OPTIONAL)
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.SSLConfig"))


try:  # pragma: no cover
    from tensorflow_serving.config.ssl_config_pb2 import SSLConfig
except ImportError:
    SSLConfig = _private_ssl_config()


# ---------------------------------------------------------------- builders


@dataclass(frozen=True)
class ModelEntry:
    """One model for `model_config_list`.

    versions=None → `latest {num_versions: latest}`; versions=[...] → `specific`;
    all_versions=True → `all {}`. labels map a name to a version number.
    """

    name: str
    base_path: str
    versions: tuple[int, ...] | None = None
    latest: int = 1
    all_versions: bool = False
    labels: Mapping[str, int] = field(default_factory=dict)


def build_model_server_config(models: Iterable[ModelEntry]) -> ModelServerConfig:
    """A ModelServerConfig with a model_config_list (platform `tensorflow`)."""
    cfg = ModelServerConfig()
    for m in models:
        mc = cfg.model_config_list.config.add(name=m.name, base_path=m.base_path,
                                              model_platform="tensorflow")
        policy = mc.model_version_policy
        if m.all_versions:
            policy.all.SetInParent()
        elif m.versions is not None:
            policy.specific.versions.extend(int(v) for v in m.versions)
        else:
            policy.latest.num_versions = int(m.latest)
        for label, version in m.labels.items():
            mc.version_labels[label] = int(version)
    return cfg


def build_batching_parameters(max_batch_size: int = 32, batch_timeout_micros: int = 1000,
                              max_enqueued_batches: int = 100,
                              num_batch_threads: int | None = None):
    """BatchingParameters as written to `--batching_parameters_file`."""
    bp = BatchingParameters()
    bp.max_batch_size.value = max_batch_size
    bp.batch_timeout_micros.value = batch_timeout_micros
    bp.max_enqueued_batches.value = max_enqueued_batches
    if num_batch_threads is not None:
        bp.num_batch_threads.value = num_batch_threads
    return bp


def build_monitoring_config(path: str = DEFAULT_PROMETHEUS_PATH, enable: bool = True):
    """MonitoringConfig enabling Prometheus at `path` (served on the REST port)."""
    mc = MonitoringConfig()
    mc.prometheus_config.enable = enable
    mc.prometheus_config.path = path
    return mc


def to_text(message) -> str:
    """Text-proto form, the format of every TF Serving config file."""
    return text_format.MessageToString(message)


def write_text(message, path: str | Path) -> Path:
    """Write a config message atomically (the server may be polling the file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_text(message))
    tmp.replace(path)
    return path


# ----------------------------------------------------------------- parsers


def parse_model_server_config(text: str) -> ModelServerConfig:
    """Parse `--model_config_file` contents; raises text_format.ParseError."""
    return text_format.Parse(text, ModelServerConfig())


def parse_batching_parameters(text: str):
    """Parse `--batching_parameters_file` contents."""
    return text_format.Parse(text, BatchingParameters())


def parse_monitoring_config(text: str):
    """Parse `--monitoring_config_file` contents."""
    return text_format.Parse(text, MonitoringConfig())


class ConfigFileError(ValueError):
    """A config file that cannot be read or parsed; the text is TF Serving's start-up error."""


class CheckFailedError(ConfigFileError):
    """A file TF Serving reads under TF_CHECK_OK (--ssl_config_file): a failure aborts the
    process. `check` is the failed expression as its fatal log line names it."""

    def __init__(self, message: str, check: str):
        super().__init__(message)
        self.check = check


def read_config_file(path: str | Path, message, descriptor_pool=None):
    """Parse the text proto at `path` into `message`; ConfigFileError in TF Serving's words.

    `descriptor_pool` resolves `[type.googleapis.com/...]` Any payloads."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigFileError(f"NOT_FOUND: {path}; No such file or directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"FAILED_PRECONDITION: {path}; {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return text_format.Parse(text, message, descriptor_pool=descriptor_pool)
    except text_format.ParseError as exc:
        detail = str(exc)
        line, col = exc.GetLine(), exc.GetColumn()
        if line is not None and detail.startswith(f"{line}:{col} : "):
            detail = detail[len(f"{line}:{col} : "):]
        where = f"{line}:{col}: " if line is not None else ""
        raise ConfigFileError(
            f"Error parsing text-format {message.DESCRIPTOR.full_name}: {where}{detail}\n"
            f"INVALID_ARGUMENT: Invalid protobuf file: '{path}'") from None


def read_model_server_config(path: str | Path) -> ModelServerConfig:
    return read_config_file(path, ModelServerConfig())


def read_batching_parameters(path: str | Path):
    return read_config_file(path, BatchingParameters())


def read_monitoring_config(path: str | Path):
    return read_config_file(path, MonitoringConfig())


def build_ssl_config(server_key: str, server_cert: str, custom_ca: str = "", client_verify: bool = False):
    """SSLConfig as written to `--ssl_config_file` (PEM texts, not paths)."""
    return SSLConfig(server_key=server_key, server_cert=server_cert, custom_ca=custom_ca,
                     client_verify=client_verify)


def read_ssl_config(path: str | Path):
    """`--ssl_config_file`; TF Serving parses it under TF_CHECK_OK, so errors are fatal checks."""
    try:
        return read_config_file(path, SSLConfig())
    except ConfigFileError as err:
        raise CheckFailedError(str(err), "ParseProtoTextFile<SSLConfig>(ssl_config_file, &ssl_config)") from None

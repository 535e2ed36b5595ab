"""Wiring: flags → config → model manager → gRPC + REST servers, and a graceful
SIGTERM (stop accepting, finish in-flight requests, unload, exit 0)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import model_service_pb2_grpc

from serving import tfs_config

from . import admin, tls
from .batching import BatchOptions
from .errors import ServingError, StartupError
from .flags import Flags, parse_channel_arguments
from .grpc_service import BudgetGate, ModelService, PredictionService
from .limits import GRPC_FRAMING_SLACK, ByteBudget
from .manager import ModelManager
from .metrics import Metrics
from .platform_config import BundleOptions, apply_threads, bundle_options
from .predict import Predictor
from .profiler import ProfilerService
from .rest import RestApp, RestServer
from .servable import SavedModelServable, Servable
from .tflite import TfLiteServable, has_tflite_model

log = logging.getLogger("modelserver")

GRACE_SECONDS = 30.0


def initial_config(flags: Flags):
    """ModelServerConfig from --model_config_file, else from --model_name/--model_base_path."""
    if flags.model_config_file:
        return tfs_config.read_model_server_config(flags.model_config_file)
    return tfs_config.build_model_server_config(
        [tfs_config.ModelEntry(name=flags.model_name, base_path=flags.model_base_path)])


def startup_roots(startup_config) -> list[str]:
    """Without --model_base_path_prefix, reloads may use the startup base paths' parents."""
    which = startup_config.WhichOneof("config")
    paths = [c.base_path for c in startup_config.model_config_list.config] if which == "model_config_list" else []
    return admin.default_roots(paths)


def grpc_addresses(flags: Flags) -> list[str]:
    """TCP (unless --port=0) and the UNIX socket of --grpc_socket_path (relative or absolute)."""
    out = [f"{flags.host}:{flags.port}"] if flags.port else []
    if flags.grpc_socket_path:
        out.append(f"unix:{os.path.abspath(flags.grpc_socket_path)}")
    if not out:
        raise SystemExit("At least one of --port or --grpc_socket_path must be set")
    return out


def batch_options(flags: Flags, bundle: BundleOptions) -> BatchOptions | None:
    """--enable_batching (+ --batching_parameters_file); with --platform_config_file,
    the SessionBundleConfig's batching_parameters instead."""
    if flags.platform_config_file:
        return None if bundle.batching is None else BatchOptions.from_proto(bundle.batching)
    if not flags.enable_batching:
        return None
    params = (tfs_config.read_batching_parameters(flags.batching_parameters_file)
              if flags.batching_parameters_file else None)
    return BatchOptions.from_proto(params)


def metrics_path(flags: Flags) -> str | None:
    """Prometheus path when the monitoring config enables it (served on the REST port)."""
    if not flags.monitoring_config_file:
        return None
    mc = tfs_config.read_monitoring_config(flags.monitoring_config_file)
    if not mc.prometheus_config.enable:
        return None
    return mc.prometheus_config.path or tfs_config.DEFAULT_PROMETHEUS_PATH


class ModelServer:
    """The running server; `start()` loads models then opens the ports (like TF Serving)."""

    def __init__(self, flags: Flags):
        self.flags = flags
        self._stopped = threading.Event()
        self.metrics = Metrics()
        # how versions load: the flags, or --platform_config_file (checked against the models)
        self.bundle = bundle_options(flags, initial_config(flags) if flags.platform_config_file else None)
        if flags.platform_config_file:
            apply_threads(self.bundle)
        self.credentials = tls.read_credentials(flags.ssl_config_file)  # None: plaintext gRPC
        # the loader (self._load) uses self.predictor only when a load runs, after __init__
        self.manager = ModelManager(self._load, allow_unavailable_labels=flags.allow_version_labels_for_unavailable_models,
                                    max_load_retries=flags.max_num_load_retries,
                                    retry_interval_s=flags.load_retry_interval_micros / 1e6,
                                    load_threads=flags.num_load_threads,
                                    unload_threads=flags.num_unload_threads)
        self.predictor = Predictor(self.manager, batch_options(flags, self.bundle), self.metrics.observe_batch,
                                   max_request_bytes=flags.max_request_bytes,
                                   tensor_content=flags.enable_serialization_as_tensor_content,
                                   check_method_name=flags.enable_signature_method_name_check,
                                   max_run_bytes=flags.run_bytes)
        self.budget = ByteBudget(flags.max_inflight_request_bytes)
        self.admin_token = admin.read_token(flags.admin_token_file) if flags.admin_token_file else None
        # an explicit --model_base_path_prefix is checked now (a bad entry exits at once)
        self._explicit_roots = (admin.parse_roots(flags.model_base_path_prefix)
                                if flags.model_base_path_prefix is not None else None)
        self.reload_roots: list[str] = []
        # runtime_latency: each session run, timed where it is called from a request
        self.predictor.run = self.metrics.timed_run(self.predictor.run)  # type: ignore[method-assign]
        self._metrics_path = metrics_path(flags)
        self._grpc: grpc.Server | None = None
        self._health = None  # grpc_health HealthServicer with --enable_grpc_healthcheck_service
        self._rest: RestServer | None = None
        self._config_text = ""
        self._config_thread: threading.Thread | None = None

    def _load(self, name: str, version: int, path: Path) -> Servable:
        """Load + warmup; the version becomes AVAILABLE only after warmup succeeded."""
        try:
            servable = self._open(name, version, path)
            if self.bundle.enable_model_warmup:
                try:
                    n = self.predictor.warmup(servable, self.bundle.warmup_iterations)
                except ServingError as err:
                    servable.close()
                    raise ServingError(err.code, f"Failed to warm up model {name} version {version}: {err.message}") from None
                if n:
                    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d.", path, n)
        except BaseException:
            self.metrics.observe_load(str(path), ok=False)
            raise
        self.metrics.observe_load(str(path), ok=True)
        return servable

    def _open(self, name: str, version: int, path: Path) -> Servable:
        """model.tflite when preferred and present (TF Serving falls back to the SavedModel)."""
        b = self.bundle
        if b.prefer_tflite_model and has_tflite_model(path):
            return TfLiteServable(name, version, path, num_pools=b.num_tflite_pools,
                                  interpreters_per_pool=b.num_tflite_interpreters_per_pool,
                                  num_threads=b.intra_op_threads or None)
        return SavedModelServable(name, version, path, tags=b.tags)

    def start(self) -> None:
        cfg = initial_config(self.flags)
        self._config_text = text_format.MessageToString(cfg)
        self.reload_roots = (self._explicit_roots if self._explicit_roots is not None
                             else startup_roots(cfg))
        log.info("Reloads may name base paths under: %s", ",".join(self.reload_roots) or "(none)")
        self._initial_load(cfg)
        if self.flags.file_system_poll_wait_seconds >= 0:
            self.manager.start_polling(self.flags.file_system_poll_wait_seconds)
        self._start_grpc()
        if self.flags.rest_api_port:
            app = RestApp(self.predictor, self.metrics, self._metrics_path, self._max_body(),
                          timeout_ms=self.flags.rest_api_timeout_in_ms, budget=self.budget,
                          cors=self.flags.rest_api_enable_cors_support)
            self._rest = RestServer(app, self.flags.host, self.flags.rest_api_port,
                                    threads=self.flags.rest_api_num_threads)
            self._rest.start()
            log.info("Exporting HTTP/REST API at:%s:%d ...", self.flags.host, self.flags.rest_api_port)
        if self.flags.model_config_file and self.flags.model_config_file_poll_wait_seconds > 0:
            self._config_thread = threading.Thread(target=self._poll_config_file, name="config-poll", daemon=True)
            self._config_thread.start()

    def _initial_load(self, cfg) -> None:
        """Load the first config before any port opens; like tensorflow_model_server, a model
        whose version fails to load (after its retries) or a label that cannot be applied
        stops the start (StartupError -> "Failed to start server. Error: ...", exit 255)."""
        label_error: ServingError | None = None
        try:
            self.manager.apply_config(cfg)
        except ServingError as err:
            label_error = err
        names = [c.name for c in cfg.model_config_list.config]
        while True:
            failed, retry_in = self.manager.unavailable_at_start(names)
            if retry_in is None:
                break
            time.sleep(min(retry_in, 1.0) + 0.01)
            self.manager.poll()
        if failed:
            detail = "".join(f"{{{{name: {name} version: {version}}} due to error: {err.code.name}: {err.message}}}, "
                             for name, version, err in failed)
            raise StartupError(f"UNKNOWN: {len(failed)} servable(s) did not become available: {{{detail}}}")
        if label_error is not None:
            raise StartupError(f"{label_error.code.name}: {label_error.message}")

    def _max_body(self) -> int:
        """REST body cap: --max_request_bytes, lowered by an explicit gRPC receive limit."""
        explicit = dict(parse_channel_arguments(self.flags.grpc_channel_arguments)).get(
            "grpc.max_receive_message_length")
        if isinstance(explicit, int) and 0 < explicit < self.flags.max_request_bytes:
            return explicit
        return self.flags.max_request_bytes

    def grpc_options(self) -> list[tuple[str, int | str]]:
        """Server arguments: gRPC's receive limit follows --max_request_bytes unless
        --grpc_channel_arguments sets it (user arguments always win)."""
        options: list[tuple[str, int | str]] = [
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length",
             min(self.flags.max_request_bytes + GRPC_FRAMING_SLACK, 2**31 - 1)),
            ("grpc.max_send_message_length", 2**31 - 1)]
        extra = parse_channel_arguments(self.flags.grpc_channel_arguments)
        keys = {k for k, _ in extra}
        return [o for o in options if o[0] not in keys] + extra

    def _interceptors(self) -> list[grpc.ServerInterceptor]:
        gates: list[grpc.ServerInterceptor] = [BudgetGate(self.budget)]
        if self.admin_token is not None:
            gates.insert(0, admin.AdminAuth(self.admin_token))
        return gates

    def _start_grpc(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.flags.grpc_max_threads,
                                                        thread_name_prefix="grpc"),
                             options=self.grpc_options(), maximum_concurrent_rpcs=None,
                             interceptors=self._interceptors())
        PredictionService(self.predictor, self.metrics).add_to_server(
            server, self.flags.max_request_bytes, self.budget)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.manager, self._on_reload, admin.ReloadGuard(self.reload_roots)), server)
        if self.flags.enable_profiler:  # server.cc registers it by default
            ProfilerService().add_to_server(server)
        if self.flags.enable_grpc_healthcheck_service:
            # imported only when asked for: grpcio-health-checking is needed for this flag alone
            from grpc_health.v1 import health, health_pb2_grpc

            self._health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        addresses = grpc_addresses(self.flags)
        for address in addresses:
            try:
                bound = (server.add_insecure_port(address) if self.credentials is None
                         else server.add_secure_port(address, self.credentials))
            except RuntimeError as exc:
                raise SystemExit(f"Failed to bind gRPC server to {address}: {exc}") from None
            if not bound:
                raise SystemExit(f"Failed to bind gRPC server to {address}")
        server.start()
        self._grpc = server
        if self._health is not None:
            from grpc_health.v1 import health_pb2

            self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        for address in addresses:
            log.info("Running gRPC ModelServer at %s%s ...", address,
                     "" if self.credentials is None else " (TLS)")

    def _on_reload(self, config) -> None:
        self._config_text = text_format.MessageToString(config)

    def _poll_config_file(self) -> None:
        """Re-apply --model_config_file when its contents change."""
        path = Path(self.flags.model_config_file)
        while not self._stopped.wait(self.flags.model_config_file_poll_wait_seconds):
            try:
                cfg = tfs_config.read_model_server_config(path)
                text = text_format.MessageToString(cfg)
                if text != self._config_text:
                    self._config_text = text
                    self.manager.apply_config(cfg)
            except ServingError as err:
                log.error("Config file reload: %s", err.message)
            except Exception as exc:
                log.error("Config file reload failed: %s", exc)

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Stop accepting new requests, let in-flight ones finish, then unload."""
        self._stopped.set()
        if self._health is not None:
            self._health.enter_graceful_shutdown()  # probes see NOT_SERVING while in-flight work ends
        self.manager.stop()
        done = self._grpc.stop(grace) if self._grpc else None
        if self._rest:
            self._rest.stop()
        if done is not None:
            done.wait(grace)
        self.manager.unload_all()

    def wait(self) -> None:
        self._stopped.wait()

    def install_signal_handlers(self) -> threading.Event:
        """SIGTERM/SIGINT → graceful stop in the main thread."""
        requested = threading.Event()

        def handler(signum, _frame):
            log.info("Received signal %d; shutting down", signum)
            requested.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        return requested

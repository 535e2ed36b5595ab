"""A loaded model version. `Servable` is what the manager and predictor use (signatures,
`run()`, extras); `SavedModelServable` (here) and `tflite.TfLiteServable` load a format.

The SavedModel servable runs a version as TF Serving runs every SavedModel: its
MetaGraphDef (selected by tags) imported into a Session, each signature fed and
fetched by tensor name. So TF1 and TF2 SavedModels both load, and inputs are
checked by the graph itself (TF's own shape and dtype errors), not by a rank
rule of ours. Signature specs come from the SignatureDef protos (validation,
metadata)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar, cast

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, saved_model_pb2

from .errors import ServingError, failed_precondition, from_tf_error, invalid_argument
from .tensors import OwnedInputs, SignatureSpec

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000

T = TypeVar("T")
log = logging.getLogger("modelserver.servable")


def read_meta_graph(path: str | Path, tags: Sequence[str] = ("serve",)) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef whose tag set is exactly `tags` (TF's loader rule)."""
    path = Path(path)
    pb = path / "saved_model.pb"
    if pb.exists():
        sm = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    elif (path / "saved_model.pbtxt").exists():
        from google.protobuf import text_format

        sm = text_format.Parse((path / "saved_model.pbtxt").read_text(), saved_model_pb2.SavedModel())
    else:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}")
    for mg in sm.meta_graphs:
        if set(mg.meta_info_def.tags) == set(tags):
            return mg
    available = "; ".join("{ " + " ".join(mg.meta_info_def.tags) + " }" for mg in sm.meta_graphs)
    raise ServingError(grpc.StatusCode.NOT_FOUND,
                       f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. "
                       f"Available tag sets: {available or 'none'}")


def session_config() -> config_pb2.ConfigProto:
    """Thread pools as configured by runtime.configure_tensorflow (0: TF's automatic choice)."""
    return config_pb2.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads())


class Servable:
    """A loaded version as the manager and predictor see it: its SignatureDefs (metadata,
    validation), `run()`, and per-version extras (e.g. batch schedulers) closed on unload.
    Subclasses load one model format and implement `run()`; it must be safe to call
    concurrently."""

    def __init__(self, name: str, version: int, path: str | Path,
                 meta_graph: meta_graph_pb2.MetaGraphDef):
        self.name = name
        self.version = version
        self.path = Path(path)
        self.meta_graph = meta_graph
        self.specs: dict[str, SignatureSpec] = {
            key: SignatureSpec.from_signature_def(key, sig)
            for key, sig in self.meta_graph.signature_def.items()
        }
        self.extras: dict[str, object] = {}
        self._extras_lock = threading.Lock()

    @property
    def signature_defs(self):
        return self.meta_graph.signature_def

    def spec(self, signature_name: str) -> SignatureSpec:
        key = signature_name or DEFAULT_SIGNATURE
        try:
            return self.specs[key]
        except KeyError:
            raise failed_precondition(f'Serving signature key "{key}" not found.') from None

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the signature; returns the requested outputs (all when None)."""
        raise NotImplementedError

    @property
    def measurable(self) -> bool:
        """Whether `run_measured` reports a run's peak tensor bytes (runmem.RunPlanner)."""
        return False

    def run_measured(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                     outputs: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], int | None]:
        """`run()`, and the peak bytes of live tensors during it (None: not known)."""
        return self.run(signature_name, inputs, outputs), None

    @property
    def is_tf2(self) -> bool:
        """Written by TF2's tf.saved_model.save (it has an object graph); TF1 builders write none."""
        return bool(self.meta_graph.object_graph_def.nodes)

    def extra(self, key: str, factory: Callable[[], T]) -> T:
        """Get or create a per-servable helper (created once, closed on unload).

        A key always names the same kind of helper, so the stored one has `factory`'s type."""
        with self._extras_lock:
            if key not in self.extras:
                self.extras[key] = factory()
            return cast(T, self.extras[key])

    def close(self) -> None:
        with self._extras_lock:
            extras, self.extras = list(self.extras.values()), {}
        for item in extras:
            close = getattr(item, "close", None)
            if close:
                close()

    def warmup_records(self) -> list:
        """PredictionLog records from assets.extra/tf_serving_warmup_requests (≤1000)."""
        from tensorflow_serving.apis import prediction_log_pb2

        file = self.path / WARMUP_FILE
        if not file.exists():
            return []
        records = []
        for raw in tf.data.TFRecordDataset(str(file)).take(MAX_WARMUP_RECORDS + 1):
            records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
        if len(records) > MAX_WARMUP_RECORDS:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {file}")
        return records


def check_input_aliases(spec: SignatureSpec, feeds: Sequence[str]) -> None:
    """Every fed alias must be a signature input (TF Serving's error text)."""
    unknown = [a for a in feeds if a not in spec.inputs]
    if unknown:
        raise invalid_argument(f"input tensor alias not found in signature: {unknown[0]}. "
                               f"Inputs expected to be in the set {{{','.join(sorted(spec.inputs))}}}.")


def step_peak_bytes(run_metadata: config_pb2.RunMetadata) -> int:
    """Peak live tensor bytes of one traced step (allocations before frees at a tie)."""
    events = [(r.alloc_micros, -r.alloc_bytes)
              for dev in run_metadata.step_stats.dev_stats
              for node in dev.node_stats for mem in node.memory for r in mem.allocation_records]
    events.sort()
    live = peak = 0
    for _, negated in events:
        live -= negated
        peak = max(peak, live)
    return peak


class SavedModelServable(Servable):
    """A SavedModel version run in a Session (see the module docstring)."""

    def __init__(self, name: str, version: int, path: str | Path, tags: Sequence[str] = ("serve",)):
        super().__init__(name, version, path, read_meta_graph(Path(path), tags))
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=session_config())
        with self._graph.as_default():
            tf.compat.v1.saved_model.loader.load(self._session, list(tags), str(self.path))
            missing = self._unrestored_variables()
        # A Keras 3 model saved with tf.saved_model.save restores its variables only through
        # the TF2 object graph (the session restore leaves them unset, and TF Serving fails
        # every request); such a version is served through tf.saved_model.load instead.
        self._functions: dict[str, Callable] | None = None
        if missing:
            log.warning("%s: %d variables (e.g. %s) are not restored by the SavedModel's saver; "
                        "serving it through its TF2 object graph", self.path, len(missing), missing[0])
            loaded = tf.saved_model.load(str(self.path), tags=list(tags))
            self._functions = dict(loaded.signatures)
            self._loaded = loaded
        self._callables: dict[tuple[str, tuple[str, ...], tuple[str, ...], bool], Callable] = {}
        self._callables_lock = threading.Lock()

    def _unrestored_variables(self) -> list[str]:
        """Resource variables of the loaded graph that hold no value."""
        handles = [op for op in self._graph.get_operations() if op.type == "VarHandleOp"]
        if not handles:
            return []
        checks = [tf.raw_ops.VarIsInitializedOp(resource=op.outputs[0]) for op in handles]
        done = self._session.run(checks)
        return [op.name for op, ok in zip(handles, done, strict=True) if not ok]

    def _callable(self, spec: SignatureSpec, feeds: tuple[str, ...], fetches: tuple[str, ...],
                  traced: bool = False) -> Callable:
        """A session callable feeding and fetching tensor names (made once per combination;
        `traced`: with RunOptions.SOFTWARE_TRACE, for `run_measured`).

        Session callables run the graph without Python's feed-shape check, as TF
        Serving's Session::Run does: the graph's ops decide what they accept."""
        key = (spec.key, feeds, fetches, traced)
        with self._callables_lock:
            fn = self._callables.get(key)
            if fn is None:
                options = config_pb2.CallableOptions(
                    feed=[spec.inputs[a].name for a in feeds],
                    fetch=[spec.outputs[a].name for a in fetches])
                if traced:
                    options.run_options.trace_level = config_pb2.RunOptions.SOFTWARE_TRACE
                fn = self._callables[key] = self._session._make_callable_from_options(options)
            return fn

    @property
    def measurable(self) -> bool:
        return self._functions is None

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run the signature; returns the requested outputs (all when None)."""
        return self._run(signature_name, inputs, outputs, None)

    def run_measured(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                     outputs: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], int | None]:
        """`run()` traced: the step's allocation records give its peak of live tensor bytes."""
        if self._functions is not None:
            return self.run(signature_name, inputs, outputs), None
        metadata = config_pb2.RunMetadata()
        out = self._run(signature_name, inputs, outputs, metadata)
        return out, step_peak_bytes(metadata)

    def _run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
             outputs: Sequence[str] | None,
             metadata: config_pb2.RunMetadata | None) -> dict[str, np.ndarray]:
        spec = self.spec(signature_name)
        feeds = tuple(sorted(inputs))
        fetches = tuple(outputs) if outputs is not None else tuple(sorted(spec.outputs))
        check_input_aliases(spec, feeds)
        if self._functions is not None:
            return self._run_eager(spec.key, inputs, fetches)
        args = [inputs[a] for a in feeds]
        if isinstance(inputs, OwnedInputs):
            inputs.clear()  # the feed list is now the only holder of the request's arrays
        try:
            if metadata is None:
                values = self._callable(spec, feeds, fetches)(*args)
            else:
                values = self._callable(spec, feeds, fetches, traced=True)(*args, run_metadata=metadata)
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise invalid_argument(str(exc)) from None
        finally:
            del args
        return {a: np.asarray(v) for a, v in zip(fetches, values, strict=True)}

    def _run_eager(self, key: str, inputs: Mapping[str, np.ndarray],
                   fetches: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The TF2 path (object-graph models): the signature function checks its own specs."""
        assert self._functions is not None
        try:
            tensors = {k: tf.constant(v) if v.dtype != object else tf.constant(v.tolist())
                       for k, v in inputs.items()}
            if isinstance(inputs, OwnedInputs):
                inputs.clear()
            result = self._functions[key](**tensors)
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise invalid_argument(str(exc)) from None
        return {k: result[k].numpy() for k in fetches}

"""A version served from its `model.tflite` (--prefer_tflite_model), the way TF Serving's
TfLiteSession does it, but on TensorFlow's own `tf.lite.Interpreter`:

* Signatures: the SignatureDefs stored in the model's `signature_defs_metadata` entry (what
  TF Serving reads); without them, one `serving_default` (method predict) whose aliases
  are the main subgraph's input/output tensor names minus a `:N` suffix, and whose
  TensorInfos carry the tensor name, dtype and the interpreter's current dims. TF
  Serving does not read the converter's SignatureRunner table, so neither do we.
* Concurrency: an interpreter is not thread-safe, so requests take one of
  --num_tflite_pools pools (more wait); a pool with --num_tflite_interpreters_per_pool
  > 1 splits a request's rows over its interpreters and runs the parts in parallel.
* Inputs are resized to each request's shape, as TfLiteSession does.
"""

from __future__ import annotations

import logging
import queue
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from .errors import ServingError, invalid_argument
from .servable import DEFAULT_SIGNATURE, Servable, check_input_aliases
from .tensors import OwnedInputs, SignatureSpec

TFLITE_FILE = "model.tflite"
SIGNATURE_DEFS_METADATA = b"signature_defs_metadata"  # tflite kSignatureDefsMetadataName
PREDICT_METHOD = "tensorflow/serving/predict"

log = logging.getLogger("modelserver.tflite")

# TfLiteSession's type map; any other TFLite type fails the load.
_TF_DTYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.uint8): types_pb2.DT_UINT8,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.object_): types_pb2.DT_STRING,
    np.dtype(np.bytes_): types_pb2.DT_STRING,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
    np.dtype(np.int16): types_pb2.DT_INT16,
    np.dtype(np.complex64): types_pb2.DT_COMPLEX64,
    np.dtype(np.int8): types_pb2.DT_INT8,
}


def has_tflite_model(path: str | Path) -> bool:
    return (Path(path) / TFLITE_FILE).is_file()


def legacy_name(tensor_name: str) -> str:
    """`name:0` → `name` (early converters stripped the output index)."""
    return tensor_name.split(":", 1)[0]


def resolve_name(name: str, known: Mapping[str, int]) -> str:
    """A signature's tensor name as the interpreter knows it (TF Serving's fallback rule)."""
    if name in known:
        return name
    if legacy_name(name) in known:
        return legacy_name(name)
    raise ServingError(grpc.StatusCode.INTERNAL, f"Unknown tensor '{name}'.")


def metadata_signature_defs(model: bytes) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The `signature_defs_metadata` entry (a flexbuffer map: key → serialized SignatureDef)."""
    from flatbuffers import flexbuffers  # type: ignore[import-untyped]
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() != SIGNATURE_DEFS_METADATA:
            continue
        data = root.Buffers(entry.Buffer()).DataAsNumpy()
        if not isinstance(data, np.ndarray) or not data.size:
            return {}
        try:
            table = flexbuffers.GetRoot(data.tobytes()).AsMap
            return {key.AsKey: meta_graph_pb2.SignatureDef.FromString(value.AsStringBytes)
                    for key, value in zip(table.Keys, table.Values, strict=True)}
        except Exception as exc:  # a corrupt table: TF Serving refuses the model
            raise invalid_argument(f"Invalid SignatureDefs found in TfLite model: {exc}") from None
    return {}


def tensor_info(detail: Mapping) -> meta_graph_pb2.TensorInfo:
    """TensorInfo of an interpreter tensor (name, dtype, current dims), as TF Serving fills it."""
    dtype = np.dtype(detail["dtype"])
    if dtype not in _TF_DTYPES:
        raise ServingError(grpc.StatusCode.INTERNAL, f"Unknown TfLite type: {dtype.name}")
    info = meta_graph_pb2.TensorInfo(name=detail["name"], dtype=_TF_DTYPES[dtype])
    for size in detail["shape"]:
        info.tensor_shape.dim.add(size=int(size))
    return info


def build_signature_defs(model: bytes, inputs: Sequence[Mapping], outputs: Sequence[Mapping],
                         ) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The model's metadata SignatureDefs (names checked), else a generated serving_default."""
    in_names = {d["name"]: d["index"] for d in inputs}
    out_names = {d["name"]: d["index"] for d in outputs}
    stored = metadata_signature_defs(model)
    for sig in stored.values():
        for alias, info in sig.inputs.items():
            info.name = _resolve_in(info.name, in_names, f"Signature input {alias} references an unknown tensor")
        for alias, info in sig.outputs.items():
            info.name = _resolve_in(info.name, out_names, f"Signature output {alias} references an unknown tensor")
    if stored:
        return stored
    log.warning("No signature def found in TFLite model. Generating one.")
    sig = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for d in inputs:
        sig.inputs[legacy_name(d["name"])].CopyFrom(tensor_info(d))
    for d in outputs:
        sig.outputs[legacy_name(d["name"])].CopyFrom(tensor_info(d))
    return {DEFAULT_SIGNATURE: sig}


def _resolve_in(name: str, known: Mapping[str, int], context: str) -> str:
    try:
        return resolve_name(name, known)
    except ServingError as err:
        raise ServingError(err.code, f"{context}: {err.message}") from None


def split_rows(inputs: Mapping[str, np.ndarray], parts: int) -> list[dict[str, np.ndarray]] | None:
    """Rows of every input cut into ≤`parts` mini-batches (None: not splittable)."""
    rows = {a.shape[0] if a.ndim else -1 for a in inputs.values()}
    if parts < 2 or len(rows) != 1 or (n := rows.pop()) < 2:
        return None
    cuts = np.array_split(np.arange(n), min(parts, n))
    return [{k: v[c[0]:c[-1] + 1] for k, v in inputs.items()} for c in cuts]


class _Interpreter:
    """One tf.lite.Interpreter with its name → tensor index maps; used by one thread at a time."""

    def __init__(self, model: bytes, num_threads: int | None):
        import tensorflow as tf

        with warnings.catch_warnings():  # tf.lite.Interpreter warns that LiteRT replaces it
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(model_content=model, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        details = self.interpreter.get_input_details()
        self.inputs = {d["name"]: d["index"] for d in details}
        self.outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self._dtypes = {d["index"]: np.dtype(d["dtype"]) for d in details}
        self._shapes = {d["index"]: tuple(int(n) for n in d["shape"]) for d in details}

    def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]) -> list[np.ndarray]:
        """Feed tensor names, invoke, copy out the fetched tensors."""
        it = self.interpreter
        resized = False
        for name, value in feeds.items():
            index = self.inputs[name]
            want = self._dtypes[index]
            strings = want.kind in "OS" and value.dtype.kind in "OSU"
            if want != value.dtype and not strings:
                raise invalid_argument(f"Input tensor {legacy_name(name)} has dtype {value.dtype.name}; "
                                       f"the TFLite model expects {want.name}")
            if self._shapes[index] != tuple(value.shape):
                try:
                    it.resize_tensor_input(index, list(value.shape))
                except (ValueError, RuntimeError):
                    raise ServingError(grpc.StatusCode.INTERNAL,
                                       f"Failed to resize input tensor: {name} to shape "
                                       f"{list(value.shape)}") from None
                self._shapes[index] = tuple(value.shape)
                resized = True
        if resized:
            try:
                it.allocate_tensors()
            except RuntimeError:
                self._shapes = dict.fromkeys(self._shapes, ())  # resize again next time
                raise ServingError(grpc.StatusCode.INTERNAL, "Failed to allocate tensors") from None
        try:
            for name, value in feeds.items():
                it.set_tensor(self.inputs[name], value)
            it.invoke()
        except ValueError as exc:
            raise invalid_argument(str(exc)) from None
        except RuntimeError:
            raise ServingError(grpc.StatusCode.INTERNAL, "Failed to invoke TfLite interpreter") from None
        return [it.get_tensor(self.outputs[n]) for n in fetches]


class TfLiteServable(Servable):
    """A version served from model.tflite; same interface as the SavedModel servable."""

    def __init__(self, name: str, version: int, path: str | Path, num_pools: int = 1,
                 interpreters_per_pool: int = 1, num_threads: int | None = None):
        model = (Path(path) / TFLITE_FILE).read_bytes()
        num_pools, per_pool = max(1, num_pools), max(1, interpreters_per_pool)
        try:
            first = _Interpreter(model, num_threads)
        except ValueError as exc:
            raise invalid_argument(f"Cannot build FlatBufferModel from buffer: {exc}") from None
        details = first.interpreter
        defs = build_signature_defs(model, details.get_input_details(), details.get_output_details())
        meta = meta_graph_pb2.MetaGraphDef()
        for key, sig in defs.items():
            meta.signature_def[key].CopyFrom(sig)
        super().__init__(name, version, path, meta)
        self._model = model  # the interpreters read the flatbuffer in place
        pools: queue.SimpleQueue[list[_Interpreter]] = queue.SimpleQueue()
        for p in range(num_pools):
            pools.put([first if p == 0 and i == 0 else _Interpreter(model, num_threads)
                       for i in range(per_pool)])
        self._pools = pools
        self._parts = ThreadPoolExecutor(max_workers=num_pools * (per_pool - 1),
                                         thread_name_prefix="tflite") if per_pool > 1 else None
        log.info("Serving %s version %d from %s (%d pool(s) × %d interpreter(s))",
                 name, version, TFLITE_FILE, num_pools, per_pool)

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        spec = self.spec(signature_name)
        check_input_aliases(spec, list(inputs))
        fetches = tuple(outputs) if outputs is not None else tuple(sorted(spec.outputs))
        feeds = {spec.inputs[a].name: v for a, v in inputs.items()}
        if isinstance(inputs, OwnedInputs):
            inputs.clear()
        pool = self._pools.get()  # blocks while every pool is busy
        try:
            names = self._fetch_names(spec, fetches, pool[0])
            feeds = {resolve_name(n, pool[0].inputs): v for n, v in feeds.items()}
            parts = split_rows(feeds, len(pool)) if self._parts is not None else None
            if parts is None:
                values = pool[0].run(feeds, names)
            else:
                assert self._parts is not None
                later = [self._parts.submit(it.run, part, names)
                         for it, part in zip(pool[1:], parts[1:], strict=False)]
                pieces = [pool[0].run(parts[0], names)] + [f.result() for f in later]
                values = [np.concatenate([p[i] for p in pieces]) for i in range(len(names))]
        finally:
            self._pools.put(pool)
        return dict(zip(fetches, values, strict=True))

    @staticmethod
    def _fetch_names(spec: SignatureSpec, fetches: Sequence[str], it: _Interpreter) -> list[str]:
        out = []
        for alias in fetches:
            try:
                out.append(resolve_name(spec.outputs[alias].name, it.outputs))
            except ServingError as err:
                raise ServingError(err.code, f"Missing output TFLite tensor: {spec.outputs[alias].name}: "
                                   f"{err.message}") from None
        return out

    def close(self) -> None:
        super().close()
        if self._parts is not None:
            self._parts.shutdown(wait=False)

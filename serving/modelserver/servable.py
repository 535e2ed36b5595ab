"""One loaded model version: the SavedModel's signatures, their specs (from the
SignatureDef protos, for validation and metadata), and the call that runs them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar, cast

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from .errors import ServingError, failed_precondition, from_tf_error, invalid_argument
from .tensors import OwnedInputs, SignatureSpec

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000

T = TypeVar("T")


def read_meta_graph(path: str | Path, tag: str = "serve") -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged `serve` (its signature_def map is what clients see)."""
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
        if tag in mg.meta_info_def.tags:
            return mg
    raise failed_precondition(f"MetaGraphDef associated with tags '{tag}' could not be found in SavedModel.")


class Servable:
    """A loaded version. Thread-safe to run concurrently; holds per-signature extras
    (e.g. batch schedulers) that are closed when the version is unloaded."""

    def __init__(self, name: str, version: int, path: str | Path):
        self.name = name
        self.version = version
        self.path = Path(path)
        self.meta_graph = read_meta_graph(self.path)
        self._loaded = tf.saved_model.load(str(self.path), tags=["serve"])
        self._functions: dict[str, Callable] = dict(self._loaded.signatures)
        self.specs: dict[str, SignatureSpec] = {
            key: SignatureSpec.from_signature_def(key, sig)
            for key, sig in self.meta_graph.signature_def.items()
            if key in self._functions
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
        """Call the signature; returns the requested outputs (all when None)."""
        fn = self._functions[signature_name or DEFAULT_SIGNATURE]
        try:
            tensors = {k: tf.constant(v) if v.dtype != object else tf.constant(v.tolist())
                       for k, v in inputs.items()}
            if isinstance(inputs, OwnedInputs):
                inputs.clear()  # frees the request bytes the arrays viewed before the model runs
            result = fn(**tensors)
        except tf.errors.OpError as exc:
            raise from_tf_error(exc) from None
        except (TypeError, ValueError) as exc:
            raise invalid_argument(str(exc)) from None
        keys = outputs if outputs is not None else list(result)
        return {k: result[k].numpy() for k in keys}

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

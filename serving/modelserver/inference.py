"""Classify, Regress and MultiInference as TF Serving runs them on a SavedModel
session (classifier.cc, regressor.cc, multi_inference.cc, util.cc): signature
checks, the serialized-Example input tensor, and the result protos built from the
output arrays. The checks and conversions are pure functions (protos + numpy) so
each error text is unit-testable; `InferenceRunner` adds model resolution and the run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    regression_pb2,
)

from .errors import ServingError, invalid_argument
from .limits import resource_exhausted
from .predict import Predictor, spec_target
from .servable import DEFAULT_SIGNATURE, Servable

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"
# Python objects per example on top of its bytes (a bytes object and its array slot)
EXAMPLE_OVERHEAD = 64


def _debug_string(sig) -> str:
    return text_format.MessageToString(sig)


def _shape_text(arr: np.ndarray) -> str:
    """TensorShape::DebugString: `[2,1]`."""
    return "[" + ",".join(str(d) for d in arr.shape) + "]"


def _dtype_name(arr: np.ndarray) -> str:
    if arr.dtype == object or arr.dtype.kind in "SU":
        return "DT_STRING"
    try:
        return types_pb2.DataType.Name(tf.dtypes.as_dtype(arr.dtype).as_datatype_enum)
    except TypeError:
        return str(arr.dtype)


# ------------------------------------------------------------ signature checks


def find_signature(signature_defs: Mapping[str, Any], signature_name: str, method: str,
                   check_method_name: bool):
    """GetClassificationSignatureDef / GetRegressionSignatureDef: (key, SignatureDef).

    With --enable_signature_method_name_check the method_name must match; without it
    (TF Serving's default) only the signature's structure is checked."""
    key = signature_name or DEFAULT_SIGNATURE
    sig = signature_defs.get(key)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {key}")
    if check_method_name:
        if sig.method_name != method:
            raise invalid_argument(_method_error(method, sig.method_name))
    else:
        check_signature(sig, method, check_method_name)
    return key, sig


def _method_error(method: str, was: str) -> str:
    kind = "classification" if method == CLASSIFY_METHOD else "regression"
    return f"Expected {kind} signature method_name to be {method}. Was: {was}"


def check_signature(sig, method: str, check_method_name: bool) -> tuple[str, list[str]]:
    """PreProcessClassification / PreProcessRegression: (input alias, output aliases)."""
    if check_method_name and sig.method_name != method:
        raise invalid_argument(_method_error(method, sig.method_name))
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if method == CLASSIFY_METHOD:
        if len(sig.outputs) not in (1, 2):
            raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if INPUTS not in sig.inputs:
            raise invalid_argument(f"No classification inputs found in SignatureDef: {_debug_string(sig)}")
        aliases = [a for a in (CLASSES, SCORES) if a in sig.outputs]
        if not aliases:
            raise invalid_argument(
                f'Expected classification signature outputs to contain at least one of "{CLASSES}" '
                f'or "{SCORES}". Signature was: {_debug_string(sig)}')
        return INPUTS, aliases
    if len(sig.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if INPUTS not in sig.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_debug_string(sig)}")
    if OUTPUTS not in sig.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_debug_string(sig)}")
    return INPUTS, [OUTPUTS]


# ------------------------------------------------------------ input tensor


def _example_list(inp: input_pb2.Input) -> tuple[Sequence[Any], Any | None]:
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        return inp.example_list.examples, None
    if kind == "example_list_with_context":
        return inp.example_list_with_context.examples, inp.example_list_with_context.context
    return (), None


def input_size(inp: input_pb2.Input) -> tuple[int, int]:
    """(examples, bytes of the serialized-example tensor), counted before building it:
    the context is copied in front of every example, so its size counts once per example."""
    examples, context = _example_list(inp)
    n = len(examples)
    prefix = context.ByteSize() if context is not None else 0
    return n, n * prefix + sum(e.ByteSize() for e in examples)


def serialized_examples(inp: input_pb2.Input, limit: int | None = None) -> np.ndarray:
    """InputToSerializedExampleTensor: a [N] string array, one serialized Example each;
    with a context, its bytes come first (parsing lets the example's features win)."""
    n, total = input_size(inp)
    if n == 0:
        raise invalid_argument("Input is empty.")
    if limit is not None and total > limit:
        raise resource_exhausted(
            f"tensor parsing error: {INPUTS} ({n} serialized examples take {total} bytes, over the "
            f"limit of {limit} bytes set by --max_request_bytes)")
    examples, context = _example_list(inp)
    prefix = context.SerializeToString() if context is not None else b""
    out = np.empty(n, dtype=object)
    for i, example in enumerate(examples):
        out[i] = prefix + example.SerializeToString()
    return out


# ------------------------------------------------------------ results


def classification_result(num_examples: int, outputs: Mapping[str, np.ndarray],
                          result: classification_pb2.ClassificationResult) -> None:
    """PostProcessClassificationResult: `classes` [N, C] strings and/or `scores` [N, C] floats."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for name, arr, dtype in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if arr is None:
            continue
        if arr.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(arr)}")
        if _dtype_name(arr) != dtype:
            raise invalid_argument(f"Expected {name} Tensor of {dtype}. Got: {_dtype_name(arr)}")
        if arr.shape[0] != num_examples:
            raise invalid_argument(f"Expected {name} output batch size of {num_examples}. Got: {arr.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument("Tensors class and score should match in dim_size(1). "
                               f"Got {classes.shape[1]} vs. {scores.shape[1]}")
    num_classes = next((a.shape[1] for a in (classes, scores) if a is not None), 0)
    for i in range(num_examples):
        row = result.classifications.add()
        for c in range(num_classes):
            cl = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                # proto3 `string`: bytes that are not UTF-8 cannot be set from Python
                cl.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cl.score = float(scores[i, c])


def regression_result(num_examples: int, outputs: Mapping[str, np.ndarray],
                      result: regression_pb2.RegressionResult) -> None:
    """PostProcessRegressionResult: `outputs` of shape [N] or [N, 1], float."""
    out = outputs.get(OUTPUTS)
    if out is None:
        raise invalid_argument(f"Could not find output tensor '{OUTPUTS}'")
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or "
                               f"[batch_size, 1] but got {_shape_text(out)}")
    if out.shape[0] != num_examples:
        raise invalid_argument(f"Input batch size did not match output batch size: {num_examples} vs. {out.shape[0]}")
    if _dtype_name(out) != "DT_FLOAT":
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(out)}")
    for value in out.reshape(-1):
        result.regressions.add(value=float(value))


def make_model_spec(spec, name: str, signature_name: str, version: int) -> None:
    """MakeModelSpec: name, signature name (empty → serving_default), served version."""
    spec.Clear()
    spec.name = name
    spec.signature_name = signature_name or DEFAULT_SIGNATURE
    spec.version.value = version


def check_tasks(tasks: Sequence[inference_pb2.InferenceTask], signature_defs: Mapping[str, Any],
                check_method_name: bool, shared_input: bool = True) -> list[tuple[str, str, list[str]]]:
    """TensorFlowMultiInferenceRunner::Infer's checks: one model, distinct signatures,
    classify/regress tasks only, and (`shared_input`) one shared input tensor.
    Returns (key, method, aliases).

    TF2 SavedModels give every signature its own input placeholder, so the shared-tensor
    rule would refuse every multi-task request on them; TF Serving's TF2 runner
    (tfrt_multi_inference.cc) instead feeds the same examples to each signature, and
    its own testMultiInferenceTf2 expects that. `shared_input=False` is that rule."""
    model_name, input_name = "", ""
    seen: set[str] = set()
    plan = []
    for task in tasks:
        name = task.model_spec.name
        if not name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = name
        elif name != model_name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        key = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        sig = signature_defs.get(key)
        if sig is None:
            raise invalid_argument(f"Requested signature not found in model graph: {key}")
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                               f"Unsupported signature method_name: {task.method_name}")
        alias, aliases = check_signature(sig, task.method_name, check_method_name)
        tensor = sig.inputs[alias].name
        if not input_name:
            input_name = tensor
        elif tensor != input_name and shared_input:
            raise invalid_argument("Input tensor must be the same for all Signatures.")
        plan.append((key, task.method_name, aliases))
    return plan


# ------------------------------------------------------------ runner


class InferenceRunner:
    """Classify / Regress / MultiInference requests end to end on the Predictor's
    servables (same resolution, batching and timeouts as Predict).

    `charge(nbytes)` is called with the input tensor's size before it is built, so a
    caller can hold it against the in-flight budget (RESOURCE_EXHAUSTED when full)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def _input(self, inp: input_pb2.Input, charge: Callable[[int], None] | None) -> np.ndarray:
        n, total = input_size(inp)
        if charge is not None and n:
            charge(total + n * EXAMPLE_OVERHEAD)
        return serialized_examples(inp, self.predictor.max_request_bytes)

    def _run(self, servable: Servable, key: str, examples: np.ndarray, aliases: list[str],
             timeout: float | None) -> dict[str, np.ndarray]:
        spec = servable.spec(key)
        return self.predictor.run(servable, spec, {INPUTS: examples}, aliases, timeout)

    def _one(self, request, method: str, charge, timeout) -> tuple[Servable, str, int, dict]:
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        ms = request.model_spec
        version, label = spec_target(ms)
        servable = self.predictor.manager.resolve(ms.name, version, label)
        check = self.predictor.check_method_name
        key, sig = find_signature(servable.signature_defs, ms.signature_name, method, check)
        _, aliases = check_signature(sig, method, check)
        examples = self._input(request.input, charge)
        outputs = self._run(servable, key, examples, aliases, timeout)
        return servable, key, len(examples), outputs

    def classify(self, request: classification_pb2.ClassificationRequest,
                 charge: Callable[[int], None] | None = None,
                 timeout: float | None = None) -> classification_pb2.ClassificationResponse:
        servable, _, n, outputs = self._one(request, CLASSIFY_METHOD, charge, timeout)
        response = classification_pb2.ClassificationResponse()
        make_model_spec(response.model_spec, request.model_spec.name,
                        request.model_spec.signature_name, servable.version)
        classification_result(n, outputs, response.result)
        return response

    def regress(self, request: regression_pb2.RegressionRequest,
                charge: Callable[[int], None] | None = None,
                timeout: float | None = None) -> regression_pb2.RegressionResponse:
        servable, _, n, outputs = self._one(request, REGRESS_METHOD, charge, timeout)
        response = regression_pb2.RegressionResponse()
        make_model_spec(response.model_spec, request.model_spec.name,
                        request.model_spec.signature_name, servable.version)
        regression_result(n, outputs, response.result)
        return response

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest,
                        charge: Callable[[int], None] | None = None,
                        timeout: float | None = None) -> inference_pb2.MultiInferenceResponse:
        """The model comes from the first task's ModelSpec (version or label included);
        each task runs its signature on the same examples, results in task order."""
        first = request.tasks[0].model_spec if request.tasks else None
        version, label = spec_target(first) if first is not None else (None, None)
        servable = self.predictor.manager.resolve(first.name if first is not None else "", version, label)
        plan = check_tasks(request.tasks, servable.signature_defs, self.predictor.check_method_name,
                           shared_input=not getattr(servable, "is_tf2", False))
        examples = self._input(request.input, charge)
        response = inference_pb2.MultiInferenceResponse()
        for task, (key, method, aliases) in zip(request.tasks, plan, strict=True):
            outputs = self._run(servable, key, examples, aliases, timeout)
            result = response.results.add()
            if method == CLASSIFY_METHOD:
                classification_result(len(examples), outputs, result.classification_result)
            else:
                regression_result(len(examples), outputs, result.regression_result)
            make_model_spec(result.model_spec, task.model_spec.name, task.model_spec.signature_name,
                            servable.version)
        return response

"""A minimal TF Serving stand-in for the client tests, built on the OFFICIAL servicers.

Serves every numeric version directory under --model_base_path (the highest is
the default), optional labels, Predict / GetModelMetadata / GetModelStatus, in
plain or TLS (optionally mutual) mode. Run: python fake_tfs.py --port P ...
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from concurrent import futures
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

MAX_MESSAGE = 1 << 30


class Models:
    """Loaded versions, labels, and ModelSpec resolution with TF Serving's error codes."""

    def __init__(self, name: str, base: Path, labels: dict[str, int]) -> None:
        self.name = name
        self.versions = {int(p.name): tf.saved_model.load(str(p))
                         for p in sorted(base.iterdir()) if p.name.isdigit()}
        self.labels = labels

    def resolve(self, spec, context) -> int:
        if spec.name != self.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            if spec.version_label not in self.labels:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Unrecognized servable version label: {spec.version_label}")
            version = self.labels[spec.version_label]
        elif choice == "version":
            version = spec.version.value
        else:
            version = max(self.versions)
        if version not in self.versions:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"Servable not found for request: Specific({spec.name}, {version})")
        return version

    def signature(self, version: int, name: str, context):
        sigs = self.versions[version].signatures
        if (name or "serving_default") not in sigs:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"Serving signature key \"{name}\" not found.")
        return sigs[name or "serving_default"]


def _tensor_info(spec) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=spec.name or "x", dtype=spec.dtype.as_datatype_enum)
    info.tensor_shape.CopyFrom(spec.shape.as_proto())
    return info


class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: Models) -> None:
        self.models = models

    def Predict(self, request, context):
        version = self.models.resolve(request.model_spec, context)
        fn = self.models.signature(version, request.model_spec.signature_name, context)
        expected = fn.structured_input_signature[1]
        feeds = {}
        for key, proto in request.inputs.items():
            if key not in expected:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"input {key} not in signature")
            feeds[key] = tf.constant(tf.make_ndarray(proto))
        try:
            outputs = fn(**feeds)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc).splitlines()[0])
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.models.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        wanted = set(request.output_filter) or set(outputs)
        for key, value in outputs.items():
            if key in wanted:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response

    def GetModelMetadata(self, request, context):
        version = self.models.resolve(request.model_spec, context)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        for name, fn in self.models.versions[version].signatures.items():
            sig = sigmap.signature_def[name]
            sig.method_name = "tensorflow/serving/predict"
            for key, spec in fn.structured_input_signature[1].items():
                sig.inputs[key].CopyFrom(_tensor_info(spec))
            for key, spec in fn.structured_outputs.items():
                sig.outputs[key].CopyFrom(_tensor_info(tf.TensorSpec(spec.shape, spec.dtype, key)))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.models.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(sigmap)
        return response


class Status(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, models: Models) -> None:
        self.models = models

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        if spec.name != self.models.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        wanted = [spec.version.value] if spec.HasField("version") else sorted(self.models.versions)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in wanted:
            if version not in self.models.versions:
                context.abort(grpc.StatusCode.NOT_FOUND,
                              f"Could not find version {version} of model {spec.name}")
            entry = response.model_version_status.add(version=version)
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--model_base_path", type=Path, required=True)
    parser.add_argument("--labels", default="", help="stable=1,canary=2")
    parser.add_argument("--tls_cert", type=Path)
    parser.add_argument("--tls_key", type=Path)
    parser.add_argument("--tls_client_ca", type=Path, help="require client certs signed by this CA")
    args = parser.parse_args()
    labels = {k: int(v) for k, v in (item.split("=") for item in args.labels.split(",") if item)}
    models = Models(args.model_name, args.model_base_path, labels)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.so_reuseport", 0),
                                  ("grpc.max_send_message_length", MAX_MESSAGE),
                                  ("grpc.max_receive_message_length", MAX_MESSAGE)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(models), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(Status(models), server)
    address = f"127.0.0.1:{args.port}"
    if args.tls_cert:
        creds = grpc.ssl_server_credentials(
            [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())],
            root_certificates=args.tls_client_ca.read_bytes() if args.tls_client_ca else None,
            require_client_auth=args.tls_client_ca is not None)
        server.add_secure_port(address, creds)
    else:
        server.add_insecure_port(address)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"fake_tfs listening on {address}", flush=True)
    done.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()

"""Field numbers are the wire contract: check ours against the official descriptors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf.descriptor import FieldDescriptor

pytest.importorskip("tensorflow_serving")
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    status_pb2,
)

from serving.client._generated import tfrollout_wire_pb2 as wire  # noqa: E402

PAIRS = [
    (wire.Tensor, tensor_pb2.TensorProto),
    (wire.Shape, tensor_shape_pb2.TensorShapeProto),
    (wire.Shape.Dim, tensor_shape_pb2.TensorShapeProto.Dim),
    (wire.ModelSpec, model_pb2.ModelSpec),
    (wire.PredictRequest, predict_pb2.PredictRequest),
    (wire.PredictResponse, predict_pb2.PredictResponse),
    (wire.MetadataRequest, get_model_metadata_pb2.GetModelMetadataRequest),
    (wire.MetadataResponse, get_model_metadata_pb2.GetModelMetadataResponse),
    (wire.SignatureMap, get_model_metadata_pb2.SignatureDefMap),
    (wire.Signature, meta_graph_pb2.SignatureDef),
    (wire.TensorSpec, meta_graph_pb2.TensorInfo),
    (wire.StatusRequest, get_model_status_pb2.GetModelStatusRequest),
    (wire.StatusResponse, get_model_status_pb2.GetModelStatusResponse),
    (wire.VersionStatus, get_model_status_pb2.ModelVersionStatus),
    (wire.ErrorStatus, status_pb2.StatusProto),
    (wire.ReloadConfigRequest, model_management_pb2.ReloadConfigRequest),
    (wire.ReloadConfigResponse, model_management_pb2.ReloadConfigResponse),
]
VARINT_COMPATIBLE = {FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_INT32}
# Our bytes fields that stand for an upstream embedded message (both wire type 2), and which message.
BYTES_FOR_MESSAGE = {"tfrollout.wire.ReloadConfigRequest.config": "tensorflow.serving.ModelServerConfig"}


@pytest.mark.parametrize("ours,official", PAIRS, ids=[p[1].DESCRIPTOR.full_name for p in PAIRS])
def test_every_field_matches_the_official_number_and_type(ours, official) -> None:
    theirs = official.DESCRIPTOR.fields_by_number
    for field in ours.DESCRIPTOR.fields:
        assert field.number in theirs, f"{field.full_name}: no field {field.number} upstream"
        other = theirs[field.number]
        if field.full_name in BYTES_FOR_MESSAGE:
            assert field.type == FieldDescriptor.TYPE_BYTES and other.type == FieldDescriptor.TYPE_MESSAGE
            assert other.message_type.full_name == BYTES_FOR_MESSAGE[field.full_name]
        same_type = (field.type == other.type or {field.type, other.type} <= VARINT_COMPATIBLE
                     or field.full_name in BYTES_FOR_MESSAGE)
        assert same_type, f"{field.full_name}: type {field.type} vs {other.type}"
        assert field.is_repeated == other.is_repeated, field.full_name
        oneof = field.containing_oneof
        assert (oneof is None) == (other.containing_oneof is None), field.full_name


def test_embedded_messages_are_the_paired_ones() -> None:
    """A message-typed field of ours must hold our counterpart of the upstream message type."""
    counterpart = {ours.DESCRIPTOR.full_name: official.DESCRIPTOR.full_name for ours, official in PAIRS}
    for ours, official in PAIRS:
        theirs = official.DESCRIPTOR.fields_by_number
        for field in ours.DESCRIPTOR.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name in counterpart:
                other = theirs[field.number].message_type.full_name
                assert counterpart[field.message_type.full_name] == other, field.full_name


def test_reload_request_bytes_are_the_official_request() -> None:
    """`bytes config = 1` carrying a serialized ModelServerConfig == the official embedded message."""
    from serving import tfs_config

    config = tfs_config.build_model_server_config([
        tfs_config.ModelEntry("demo", "/models/demo", versions=(1, 2), labels={"stable": 1, "canary": 2}),
        tfs_config.ModelEntry("other", "/models/other")])
    official = model_management_pb2.ReloadConfigRequest(config=config)
    # map entries (version_labels) serialize in no fixed order unless asked: compare the
    # deterministic (key-sorted) encodings of both
    ours = wire.ReloadConfigRequest(config=config.SerializeToString(deterministic=True))
    assert ours.SerializeToString(deterministic=True) == official.SerializeToString(deterministic=True)
    parsed = model_management_pb2.ReloadConfigRequest.FromString(ours.SerializeToString())
    assert parsed.config == config
    carried = wire.ReloadConfigRequest.FromString(official.SerializeToString()).config
    assert type(config).FromString(carried) == config


def test_reload_response_status_reads_the_official_one() -> None:
    official = model_management_pb2.ReloadConfigResponse()
    official.status.error_code = 9  # FAILED_PRECONDITION
    official.status.error_message = "label names version 7, which is not available"
    official.metric.add(name="ignored")
    ours = wire.ReloadConfigResponse.FromString(official.SerializeToString())
    assert (ours.status.error_code, ours.status.error_message) == (9, official.status.error_message)


def test_enum_numbers_match() -> None:
    official = {v.name: v.number for v in types_pb2.DataType.DESCRIPTOR.values}
    for value in wire.DataType.DESCRIPTOR.values:
        assert official[value.name] == value.number
    states = {v.name: v.number for v in get_model_status_pb2.ModelVersionStatus.State.DESCRIPTOR.values}
    for value in wire.VersionStatus.State.DESCRIPTOR.values:
        assert states[value.name] == value.number


def test_both_descriptor_sets_coexist_in_one_process() -> None:
    assert wire.DESCRIPTOR.package == "tfrollout.wire"
    assert wire.Tensor.DESCRIPTOR.full_name != tensor_pb2.TensorProto.DESCRIPTOR.full_name


def test_generated_modules_are_up_to_date() -> None:
    proc = subprocess.run([sys.executable, "-m", "serving.client.protos.generate", "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

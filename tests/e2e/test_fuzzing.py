"""Every RPC of the placer (its own service and the Open Inference Protocol) and of an
adapter, fed messages hypothesis makes from their
descriptors (a bounded number each): whatever arrives, the answer is a status a client can
act on, never INTERNAL or UNKNOWN, and the service keeps serving with its instance."""

import pytest

from inference import open_inference_grpc_pb2 as oip
from straightline.v1 import inference_pb2, placer_pb2, types_pb2
from straightline_common.auth import Role
from straightline_common.processes import health_status
from tests.placer.conftest import FLASK
from tests.support.fuzzing import assert_fuzzed_answers_are_actionable

PLACER_RPCS = [
    ("Infer", placer_pb2.InferRequest, "unary"),
    ("Place", placer_pb2.PlaceRequest, "unary"),
    ("PlaceBatch", placer_pb2.PlaceBatchRequest, "unary"),
    ("GetPolicy", placer_pb2.GetPolicyRequest, "unary"),
    ("UpdatePolicy", placer_pb2.UpdatePolicyRequest, "unary"),
    ("WatchResources", placer_pb2.WatchResourcesRequest, "stream"),
    ("Heartbeat", placer_pb2.HeartbeatRequest, "bidi"),
]
OIP_RPCS = [
    ("ServerLive", oip.ServerLiveRequest, "unary"),
    ("ServerReady", oip.ServerReadyRequest, "unary"),
    ("ServerMetadata", oip.ServerMetadataRequest, "unary"),
    ("ModelReady", oip.ModelReadyRequest, "unary"),
    ("ModelMetadata", oip.ModelMetadataRequest, "unary"),
    ("ModelInfer", oip.ModelInferRequest, "unary"),
]
ADAPTER_RPCS = [
    ("Predict", inference_pb2.PredictRequest, "unary"),
    ("GetModelMetadata", inference_pb2.GetModelMetadataRequest, "unary"),
    ("GetStatus", inference_pb2.GetStatusRequest, "unary"),
]


@pytest.fixture
def registered(adapters):
    return adapters(FLASK, capacity=2)


@pytest.mark.parametrize(("method", "request_class", "shape"), PLACER_RPCS)
def test_fuzzed_placer_requests_get_actionable_statuses(
    placer, channels, registered, method, request_class, shape
):
    role = Role.ADAPTER if method == "Heartbeat" else Role.OPERATOR
    channel = channels(placer.address, role)

    assert_fuzzed_answers_are_actionable(
        channel, "straightline.v1.PlacerService", method, shape, request_class
    )
    assert health_status(placer.address) == 1
    assert placer.process.poll() is None


@pytest.mark.parametrize(("method", "request_class", "shape"), OIP_RPCS)
def test_fuzzed_open_inference_protocol_requests_get_actionable_statuses(
    placer, channels, registered, method, request_class, shape
):
    channel = channels(placer.address, Role.CLIENT)

    assert_fuzzed_answers_are_actionable(
        channel, "inference.GRPCInferenceService", method, shape, request_class
    )
    assert health_status(placer.address) == 1
    assert placer.process.poll() is None


@pytest.mark.parametrize(("method", "request_class", "shape"), ADAPTER_RPCS)
def test_fuzzed_adapter_requests_get_actionable_statuses(
    channels, registered, method, request_class, shape
):
    channel = channels(registered.address, Role.PLACER)

    assert_fuzzed_answers_are_actionable(
        channel, "straightline.v1.InferenceService", method, shape, request_class
    )
    status = channel.unary_unary(
        "/straightline.v1.InferenceService/GetStatus",
        inference_pb2.GetStatusRequest.SerializeToString,
        inference_pb2.GetStatusResponse.FromString,
    )(inference_pb2.GetStatusRequest(), timeout=5)
    assert status.report.instance_id == registered.instance_id
    assert status.report.platform == types_pb2.PLATFORM_FLASK

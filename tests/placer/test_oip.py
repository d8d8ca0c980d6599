"""The Open Inference Protocol on the placer: a real placer process and simulated adapters,
called with the protocol's own gRPC stubs, as tritonclient or KServe's client call it."""

import re
import struct

import grpc
import numpy as np
import pytest

from inference import open_inference_grpc_pb2 as oip
from inference import open_inference_grpc_pb2_grpc as oip_grpc
from scripts.localstack import set_policy
from straightline_common.auth import Role
from straightline_inference.simulated import CLASS_NAMES
from tests.placer.conftest import DOCKER, FLASK, SERVERLESS

JPEG = b"\xff\xd8\xff\xe0"  # what the placer sniffs; the simulated platform does not decode


def jpeg(size: int) -> bytes:
    return JPEG + b"x" * (size - len(JPEG))


def with_lengths(*elements: bytes) -> bytes:
    """BYTES elements as the protocol's binary form has them: each after its 4-byte length."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def encoded(*images: bytes, raw=False, model="demo", outputs=()) -> oip.ModelInferRequest:
    tensor = oip.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES")
    tensor.shape.append(len(images))
    request = oip.ModelInferRequest(model_name=model, id="batch-1", outputs=outputs)
    if raw:
        request.raw_input_contents.append(with_lengths(*images))
    else:
        tensor.contents.bytes_contents.extend(images)
    request.inputs.append(tensor)
    return request


def scores_of(response: oip.ModelInferResponse) -> np.ndarray:
    (output,) = response.outputs
    assert (output.name, output.datatype) == ("scores", "FP32")
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(output.shape))


def parameter(response, key: str) -> list[str]:
    return response.parameters[f"straightline.{key}"].string_param.split(",")


@pytest.fixture
def oip_stub(placer, channels):
    return oip_grpc.GRPCInferenceServiceStub(channels(placer.address, Role.CLIENT))


def test_health_and_metadata_follow_the_live_view(oip_stub, adapters):
    assert oip_stub.ServerLive(oip.ServerLiveRequest()).live
    assert not oip_stub.ServerReady(oip.ServerReadyRequest()).ready
    assert not oip_stub.ModelReady(oip.ModelReadyRequest(name="demo")).ready
    adapters(FLASK, capacity=2)
    assert oip_stub.ServerReady(oip.ServerReadyRequest()).ready
    assert oip_stub.ModelReady(oip.ModelReadyRequest(name="demo")).ready
    assert not oip_stub.ModelReady(oip.ModelReadyRequest(name="other")).ready
    server = oip_stub.ServerMetadata(oip.ServerMetadataRequest())
    assert server.name == "straightline" and "classification" in server.extensions
    model = oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="demo"))
    assert (model.name, list(model.versions), model.platform) == ("demo", ["1"], "straightline")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("scores", "FP32", [-1, len(CLASS_NAMES)])
    ]
    assert model.properties["class_names"] == ",".join(CLASS_NAMES)
    with pytest.raises(grpc.RpcError) as unknown:
        oip_stub.ModelMetadata(oip.ModelMetadataRequest(name="other"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_a_batch_of_encoded_images_is_placed_image_by_image_and_answered_in_order(
    oip_stub, adapters, raw
):
    adapters(FLASK, capacity=8)
    images = [jpeg(100), jpeg(101), jpeg(102)]  # the simulated answer: class (size % 4)
    response = oip_stub.ModelInfer(encoded(*images, raw=raw), timeout=10)
    assert (response.model_name, response.model_version, response.id) == ("demo", "1", "batch-1")
    scores = scores_of(response)
    assert scores.shape == (3, len(CLASS_NAMES))
    assert [int(row.argmax()) for row in scores] == [len(i) % len(CLASS_NAMES) for i in images]
    assert parameter(response, "platform") == ["flask"] * 3
    assert parameter(response, "request_id") == ["batch-1-0", "batch-1-1", "batch-1-2"]
    assert parameter(response, "r_d") == ["100", "101", "102"]
    assert parameter(response, "fell_back") == ["false"] * 3


def test_each_image_is_placed_by_the_rule_on_its_own(oip_stub, adapters):
    # Flask has one slot: with the images run at once, the rule sends the others elsewhere.
    adapters(FLASK, capacity=1, service_time_s=0.3)
    adapters(SERVERLESS, capacity=8, service_time_s=0.3)
    response = oip_stub.ModelInfer(encoded(*(jpeg(200 + i) for i in range(4))), timeout=10)
    platforms = parameter(response, "served_platform")
    assert platforms.count("flask") <= 1 and platforms.count("serverless") >= 3


@pytest.mark.parametrize("together", [False, True], ids=["apart", "together"])
def test_the_policy_keeps_a_batch_together(oip_stub, stub, adapters, together):
    """Each image is under D, the four together are over it: apart, Algorithm 1 sends each to
    Flask (line 11); together, the batch is one request of their bytes and goes to Docker
    (line 7), each image to that platform, the batch counted once in f_t."""
    adapters(FLASK, capacity=8)
    adapters(DOCKER, capacity=8)
    set_policy(stub, data_size_threshold_bytes=500, keep_batches_together=together)
    images = [jpeg(200 + i) for i in range(4)]
    response = oip_stub.ModelInfer(encoded(*images), timeout=10)
    assert [int(row.argmax()) for row in scores_of(response)] == [
        len(i) % len(CLASS_NAMES) for i in images
    ]
    assert parameter(response, "request_id") == [f"batch-1-{i}" for i in range(4)]
    if together:
        assert parameter(response, "served_platform") == ["docker"] * 4
        assert parameter(response, "branch") == ["large_data"] * 4
        assert parameter(response, "r_d") == [str(sum(map(len, images)))] * 4
        assert len(set(parameter(response, "f_t"))) == 1
    else:
        assert parameter(response, "served_platform") == ["flask"] * 4
        assert parameter(response, "r_d") == [str(len(i)) for i in images]
        assert len(set(parameter(response, "f_t"))) == 4


@pytest.mark.parametrize(
    ("datatype", "field", "wire"),
    [("UINT8", "uint_contents", "<u1"), ("FP32", "fp32_contents", "<f4")],
)
def test_decoded_pixels_travel_as_raw_tensors(oip_stub, adapters, datatype, field, wire):
    adapters(FLASK, capacity=4)
    pixels = np.arange(2 * 4 * 5 * 3).reshape(2, 4, 5, 3) % 256
    for raw in (False, True):
        tensor = oip.ModelInferRequest.InferInputTensor(
            name="image", datatype=datatype, shape=[2, 4, 5, 3]
        )
        request = oip.ModelInferRequest(model_name="demo", inputs=[tensor])
        if raw:
            request.raw_input_contents.append(pixels.astype(wire).tobytes())
        else:
            getattr(request.inputs[0].contents, field).extend(pixels.ravel().tolist())
        response = oip_stub.ModelInfer(request, timeout=10)
        size = 4 * 5 * 3 * np.dtype(wire).itemsize
        assert parameter(response, "r_d") == [str(size)] * 2
        assert [int(r.argmax()) for r in scores_of(response)] == [size % len(CLASS_NAMES)] * 2


def test_the_classification_parameter_returns_the_top_k_labels(oip_stub, adapters):
    adapters(FLASK, capacity=2)
    top_two = oip.ModelInferRequest.InferRequestedOutputTensor(name="scores")
    top_two.parameters["classification"].int64_param = 2
    response = oip_stub.ModelInfer(encoded(jpeg(101), outputs=[top_two]), timeout=10)
    (output,) = response.outputs
    assert (output.datatype, list(output.shape)) == ("BYTES", [1, 2])
    raw, labels = response.raw_output_contents[0], []
    while raw:
        (length,) = struct.unpack_from("<I", raw)
        labels.append(raw[4 : 4 + length].decode())
        raw = raw[4 + length :]
    assert labels[0] == f"1.000000:1:{CLASS_NAMES[1]}"  # 101 % 4
    assert labels[1].startswith("0.000000:")


def _tensor(datatype="BYTES", shape=(1,), contents=None, name="image"):
    tensor = oip.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)
    if contents is not None:
        tensor.contents.CopyFrom(contents)
    return tensor


_ONE_JPEG = oip.InferTensorContents(bytes_contents=[jpeg(50)])


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    [
        (
            oip.ModelInferRequest(model_name="demo", inputs=[_tensor(contents=_ONE_JPEG)] * 2),
            grpc.StatusCode.INVALID_ARGUMENT,
            "one input tensor",
        ),
        (
            oip.ModelInferRequest(model_name="demo", inputs=[_tensor("INT32")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "datatype 'INT32'",
        ),
        (
            oip.ModelInferRequest(
                model_name="demo", inputs=[_tensor(shape=(2,), contents=_ONE_JPEG)]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "says 2 images; it holds 1",
        ),
        (
            oip.ModelInferRequest(model_name="demo", inputs=[_tensor(shape=(65,))]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "1 to 64 images",
        ),
        (
            oip.ModelInferRequest(
                model_name="demo",
                inputs=[_tensor(contents=oip.InferTensorContents(bytes_contents=[b"GIF89a"]))],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "neither a JPEG nor a PNG",
        ),
        (
            oip.ModelInferRequest(model_name="demo", inputs=[_tensor("UINT8", (2, 2, 4))]),
            grpc.StatusCode.INVALID_ARGUMENT,
            r"\[N, H, W, 3\]",
        ),
        (
            oip.ModelInferRequest(
                model_name="demo",
                inputs=[_tensor(contents=_ONE_JPEG)],
                raw_input_contents=[struct.pack("<I", 99) + b"short"],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ends inside an element",
        ),
        (
            oip.ModelInferRequest(model_name="../demo", inputs=[_tensor(contents=_ONE_JPEG)]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model name",
        ),
        (
            oip.ModelInferRequest(model_name="other", inputs=[_tensor(contents=_ONE_JPEG)]),
            grpc.StatusCode.NOT_FOUND,
            "no live instance serves model 'other'",
        ),
        (
            oip.ModelInferRequest(
                model_name="demo",
                inputs=[_tensor(contents=_ONE_JPEG)],
                outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name="logits")],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "one output, 'scores'",
        ),
    ],
)
def test_bad_requests_get_the_status_oip_clients_expect_and_the_placer_keeps_serving(
    oip_stub, adapters, request_message, code, message
):
    adapter = adapters(FLASK, capacity=2)
    with pytest.raises(grpc.RpcError) as refused:
        oip_stub.ModelInfer(request_message, timeout=10)
    assert refused.value.code() == code
    assert re.search(message, refused.value.details())
    assert adapter.served == 0
    assert scores_of(oip_stub.ModelInfer(encoded(jpeg(100)), timeout=10)).shape == (1, 4)


def test_identity_is_checked_as_on_the_placer_service(placer, channels, adapters):
    adapters(FLASK, capacity=2)
    anonymous = oip_grpc.GRPCInferenceServiceStub(channels(placer.address, role=None))
    with pytest.raises(grpc.RpcError) as refused:
        anonymous.ModelInfer(encoded(jpeg(100)), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    as_adapter = oip_grpc.GRPCInferenceServiceStub(channels(placer.address, Role.ADAPTER))
    with pytest.raises(grpc.RpcError) as denied:
        as_adapter.ModelInfer(encoded(jpeg(100)), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

"""An Open Inference Protocol endpoint as a fourth platform: a model server's KServe v2 REST
API, reached by an adapter of platform `oip`, placed on by a real placer beside a Flask
adapter serving the same model; the same image gets the same classes on both."""

import grpc
import pytest

from scripts.localstack import set_policy
from straightline.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    placer_pb2,
    placer_pb2_grpc,
    types_pb2,
)
from straightline_common.auth import Role
from tests.support.models import image_bytes
from tests.support.stack import placer_process, wait_for_instances

pytestmark = pytest.mark.tensorflow
FLASK, OIP = types_pb2.PLATFORM_FLASK, types_pb2.PLATFORM_OIP


@pytest.fixture(scope="module")
def stack(tmp_path_factory, start_adapter, model_server, otlp_receiver):
    placer = placer_process(tmp_path_factory.mktemp("placer"), otlp_receiver.endpoint)
    try:
        placer.wait_ready()
        endpoint = f"http://127.0.0.1:{model_server.ports['http']}"
        oip = start_adapter(
            "oip",
            "--oip-url",
            endpoint,
            "--oip-models",
            "tiny",
            "--concurrency",
            "2",
            placer=placer.address,
        )
        start_adapter("flask", "--threads", "1", placer=placer.address)
        yield placer, oip
    finally:
        placer.terminate()


def tiny_metadata(adapter: inference_pb2_grpc.InferenceServiceStub) -> inference_pb2.ModelMetadata:
    request = inference_pb2.GetModelMetadataRequest(model=types_pb2.ModelRef(name="tiny"))
    return adapter.GetModelMetadata(request).metadata


def infer(stub, payload: bytes, content_type="image/jpeg"):
    request = placer_pb2.InferRequest(
        model=types_pb2.ModelRef(name="tiny"), payload=payload, content_type=content_type, top_k=4
    )
    return stub.Infer(request, timeout=60)


def test_the_same_image_gets_the_same_classes_on_flask_and_on_the_oip_endpoint(stack, channels):
    placer, _ = stack
    stub = placer_pb2_grpc.PlacerServiceStub(channels(placer.address))
    wait_for_instances(stub, 2)
    for payload, content_type in (
        (image_bytes(), "image/jpeg"),
        (image_bytes(fmt="PNG"), "image/png"),
    ):
        answers = {}
        for platform in (FLASK, OIP):
            set_policy(stub, pinned_platform=platform)
            answer = infer(stub, payload, content_type)
            assert answer.served_platform == platform
            answers[platform] = answer.classes
        # The endpoint's classification results carry six decimals.
        assert [c.label for c in answers[OIP]] == [c.label for c in answers[FLASK]]
        assert [c.score for c in answers[OIP]] == pytest.approx(
            [c.score for c in answers[FLASK]], abs=1e-6
        )


def test_the_oip_adapter_reports_the_endpoints_metadata_and_maps_its_errors(stack, channels):
    _, oip = stack
    stub = inference_pb2_grpc.InferenceServiceStub(channels(oip.address, Role.PLACER))
    metadata = tiny_metadata(stub)
    assert (metadata.model.name, metadata.model.version) == ("tiny", "1")
    assert metadata.format == "oip (straightline)"
    request = inference_pb2.PredictRequest(
        model=types_pb2.ModelRef(name="tiny"), payload=b"not an image", content_type="image/jpeg"
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.Predict(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the OIP endpoint answered 400" in refused.value.details()
    report = stub.GetStatus(inference_pb2.GetStatusRequest()).report
    assert (report.platform, report.capacity_total) == (OIP, 2)
    assert [m.name for m in report.models] == ["tiny"]

"""Any OIP server as a platform, proven with one this project did not write: MLServer (in its
own virtual environment, `make setup`), serving the store's model through a custom runtime,
behind an adapter of platform `oip` beside a Flask adapter, both under a real placer; once over
MLServer's REST API and once over its gRPC one. MLServer's REST API does not take the binary
tensor data extension, so the adapter talks plain JSON to it there."""

from pathlib import Path

import pytest

from scripts.localstack import set_policy
from straightline.v1 import (
    inference_pb2_grpc,
    placer_pb2,
    placer_pb2_grpc,
    types_pb2,
)
from straightline_common.auth import Role
from tests.e2e.test_oip_platform import tiny_metadata
from tests.support.mlserver import running_mlserver
from tests.support.models import image_bytes
from tests.support.stack import placer_process, wait_for_instances

pytestmark = pytest.mark.tensorflow
ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".venv-mlserver" / "bin" / "mlserver"
FLASK, OIP = types_pb2.PLATFORM_FLASK, types_pb2.PLATFORM_OIP


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory, model_store):
    """MLServer on loopback ports, serving `tiny` from the model store; stopped at the end."""
    with running_mlserver(model_store.root, "tiny", tmp_path_factory.mktemp("mlserver")) as urls:
        yield urls


@pytest.fixture(scope="module", params=["rest", "grpc"])
def stack(request, tmp_path_factory, start_adapter, mlserver, otlp_receiver):
    placer = placer_process(tmp_path_factory.mktemp("placer"), otlp_receiver.endpoint)
    try:
        placer.wait_ready()
        oip = start_adapter(
            *("oip", "--oip-url", mlserver[request.param], "--oip-models", "tiny"),
            placer=placer.address,
        )
        start_adapter("flask", "--threads", "1", placer=placer.address)
        yield placer, oip
    finally:
        placer.terminate()


def test_mlserver_behind_the_oip_platform_answers_as_flask_does(stack, channels):
    placer, _ = stack
    stub = placer_pb2_grpc.PlacerServiceStub(channels(placer.address))
    wait_for_instances(stub, 2)
    answers = {}
    for platform in (FLASK, OIP):
        set_policy(stub, pinned_platform=platform)
        request = placer_pb2.InferRequest(
            model=types_pb2.ModelRef(name="tiny"),
            payload=image_bytes(),
            content_type="image/jpeg",
            top_k=4,
        )
        answer = stub.Infer(request, timeout=60)
        assert answer.served_platform == platform
        answers[platform] = answer
    assert [c.label for c in answers[OIP].classes] == [c.label for c in answers[FLASK].classes]
    assert [c.score for c in answers[OIP].classes] == pytest.approx(
        [c.score for c in answers[FLASK].classes], abs=1e-5
    )


def test_the_oip_adapter_reports_mlservers_metadata(stack, channels):
    _, oip = stack
    stub = inference_pb2_grpc.InferenceServiceStub(channels(oip.address, Role.PLACER))
    metadata = tiny_metadata(stub)
    assert metadata.model.name == "tiny"
    assert metadata.format.startswith("oip (")

"""The clients people already have, against StraightLine: Triton's Python gRPC client
(tritonclient, in a process of its own: `tests/support/tritonclient_calls.py`) calls the
placer's Open Inference Protocol front door, in front of a real Flask adapter and model, and
gets the model's own answer."""

import pytest

from straightline.v1 import inference_pb2, inference_pb2_grpc, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from tests.support.models import CLASSES, image_bytes
from tests.support.stack import placer_process, wait_for_instances
from tests.support.triton_runner import assert_grpc_protocol_errors, run_tritonclient

pytestmark = pytest.mark.tensorflow
IMAGES = {"red.jpg": image_bytes((200, 40, 40)), "green.png": image_bytes((30, 160, 90), fmt="PNG")}


@pytest.fixture(scope="module")
def channels_module(tokens):
    """Channels for the module's stack, as an operator unless another role is named."""
    opened = []

    def open_one(address, role=Role.OPERATOR):
        opened.append(open_channel(address, role, tokens=tokens))
        return opened[-1]

    yield open_one
    for channel in opened:
        channel.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, start_adapter, otlp_receiver, channels_module):
    placer = placer_process(tmp_path_factory.mktemp("placer"), otlp_receiver.endpoint)
    try:
        placer.wait_ready()
        flask = start_adapter("flask", "--threads", "2", placer=placer.address)
        wait_for_instances(placer_pb2_grpc.PlacerServiceStub(channels_module(placer.address)), 1)
        yield placer, flask
    finally:
        placer.terminate()


@pytest.fixture
def triton(stack, tokens, tmp_path):
    """Runs a command of tritonclient_calls against the placer; returns its JSON."""
    placer, _ = stack
    for name, data in IMAGES.items():
        (tmp_path / name).write_bytes(data)

    def run(command: str, *files: str) -> dict:
        token = tokens.of(Role.CLIENT)
        return run_tritonclient(placer.address, token, command, *(tmp_path / f for f in files))

    return run


def direct_scores(stack, channels_module, payload: bytes, content_type: str) -> list[float]:
    """The adapter's own answer, all classes, by class index."""
    _, flask = stack
    stub = inference_pb2_grpc.InferenceServiceStub(channels_module(flask.address, Role.PLACER))
    answer = stub.Predict(
        inference_pb2.PredictRequest(
            model=types_pb2.ModelRef(name="tiny"),
            payload=payload,
            content_type=content_type,
            top_k=len(CLASSES),
        ),
        timeout=60,
    )
    scores = [0.0] * len(CLASSES)
    for scored in answer.classes:
        scores[scored.index] = scored.score
    return scores


def test_tritonclient_checks_health_and_reads_the_models_metadata(triton):
    answer = triton("health")
    assert (answer["live"], answer["ready"], answer["tiny_ready"]) == (True, True, True)
    assert answer["absent_ready"] is False
    metadata = answer["metadata"]
    assert (metadata["name"], metadata["versions"]) == ("tiny", ["1"])
    assert metadata["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": ["-1", str(len(CLASSES))]}
    ]


def test_tritonclient_infers_a_batch_of_jpeg_and_png_with_the_models_own_scores(
    triton, stack, channels_module
):
    answer = triton("infer_images", "red.jpg", "green.png")
    assert answer["served_platform"] == "flask,flask"
    for row, (name, content_type) in zip(
        answer["scores"], (("red.jpg", "image/jpeg"), ("green.png", "image/png")), strict=True
    ):
        expected = direct_scores(stack, channels_module, IMAGES[name], content_type)
        assert row == pytest.approx(expected, abs=1e-6)


def test_tritonclient_sends_raw_pixels_and_gets_the_top_k_labels(triton):
    labels = [entry.split(":") for entry in triton("infer_pixels_top_2")["labels"]]
    assert len(labels) == 2 and all(label in CLASSES for _, _, label in labels)
    assert float(labels[0][0]) >= float(labels[1][0])


def test_tritonclient_sees_the_errors_oip_clients_expect(triton):
    assert_grpc_protocol_errors(triton("errors"))

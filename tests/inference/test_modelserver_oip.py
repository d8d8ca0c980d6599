"""The Open Inference Protocol on the model server (KServe v2 REST, with the binary tensor
data extension) and in the Lambda handler: a real model server process and the real handler,
called as an OIP client calls them; the answers are the model's own (its v1 API's)."""

import base64
import json
import os
import struct
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from straightline_common.auth import Role
from tests.support.models import CLASSES, image_bytes
from tests.support.triton_runner import assert_grpc_protocol_errors, run_tritonclient

pytestmark = pytest.mark.tensorflow
RED, GREEN = image_bytes((200, 40, 40)), image_bytes((30, 160, 90), fmt="PNG")


def call(server, path, body=None, headers=None):
    """(status, headers, body) of a v2 call."""
    url = f"http://127.0.0.1:{server.ports['http']}{path}"
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def infer_json(server, document: dict, path="/v2/models/tiny/infer"):
    status, _, body = call(
        server, path, json.dumps(document).encode(), {"Content-Type": "application/json"}
    )
    return status, json.loads(body)


def v1_scores(server, image: bytes, content_type: str) -> list[float]:
    url = f"http://127.0.0.1:{server.ports['http']}/v1/models/tiny/predict?top_k=100"
    request = urllib.request.Request(url, data=image, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        classes = json.loads(response.read())["classes"]
    return [next(c["score"] for c in classes if c["index"] == i) for i in range(len(CLASSES))]


def images_input(*images: bytes) -> dict:
    return {
        "name": "image",
        "datatype": "BYTES",
        "shape": [len(images)],
        "data": [base64.b64encode(i).decode() for i in images],
    }


def test_health_metadata_and_readiness(model_server):
    assert json.loads(call(model_server, "/v2/health/live")[2]) == {"live": True}
    assert json.loads(call(model_server, "/v2/health/ready")[2]) == {"ready": True}
    status, _, body = call(model_server, "/v2/models/tiny")
    metadata = json.loads(body)
    assert status == 200 and (metadata["name"], metadata["versions"]) == ("tiny", ["1"])
    assert metadata["outputs"] == [
        {"name": "scores", "datatype": "FP32", "shape": [-1, len(CLASSES)]}
    ]
    assert call(model_server, "/v2/models/tiny/versions/1/ready")[0] == 200
    status, _, body = call(model_server, "/v2/models/absent/ready")
    assert status == 404 and "absent" in json.loads(body)["error"]


def test_json_infer_of_a_batch_gives_the_models_own_scores_in_order(model_server):
    status, answer = infer_json(model_server, {"id": "r1", "inputs": [images_input(RED, GREEN)]})
    assert status == 200
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("tiny", "1", "r1")
    (scores,) = answer["outputs"]
    assert (scores["name"], scores["datatype"], scores["shape"]) == ("scores", "FP32", [2, 4])
    expected = v1_scores(model_server, RED, "image/jpeg") + v1_scores(
        model_server, GREEN, "image/png"
    )
    assert scores["data"] == pytest.approx(expected, abs=1e-6)


def test_binary_extension_in_and_out(model_server):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 4 + len(RED)},
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = header + struct.pack("<I", len(RED)) + RED
    status, headers, reply = call(
        model_server,
        "/v2/models/tiny/infer",
        body,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert status == 200
    length = int(headers["Inference-Header-Content-Length"])
    (output,) = json.loads(reply[:length])["outputs"]
    assert output["parameters"]["binary_data_size"] == 4 * len(CLASSES)
    scores = struct.unpack(f"<{len(CLASSES)}f", reply[length:])
    assert list(scores) == pytest.approx(v1_scores(model_server, RED, "image/jpeg"), abs=1e-6)


def test_fp32_pixels_and_top_k_labels(model_server):
    pixels = {
        "name": "image",
        "datatype": "FP32",
        "shape": [1, 32, 32, 3],
        "data": [[[[200.0, 40.0, 40.0]] * 32] * 32],
    }
    top_two = {"name": "scores", "parameters": {"classification": 2}}
    status, answer = infer_json(model_server, {"inputs": [pixels], "outputs": [top_two]})
    assert status == 200
    (labels,) = answer["outputs"]
    assert (labels["datatype"], labels["shape"]) == ("BYTES", [1, 2])
    assert all(entry.split(":")[2] in CLASSES for entry in labels["data"])


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        ({"inputs": "x"}, 400, '"inputs" list'),
        (
            {"inputs": [{"name": "image", "datatype": "INT64", "shape": [1], "data": [1]}]},
            400,
            "datatype",
        ),
        (
            {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%"]}]},
            400,
            "base64",
        ),
        ({"inputs": [images_input(b"not an image")]}, 400, "neither a JPEG nor a PNG"),
        ({"inputs": [images_input(RED)], "outputs": [{"name": "logits"}]}, 400, "one output"),
        ({"id": "a\nb", "inputs": [images_input(RED)]}, 400, "control character"),
    ],
)
def test_bad_requests_get_the_protocols_error_and_the_server_keeps_serving(
    model_server, document, status, message
):
    got, answer = infer_json(model_server, document)
    assert got == status and message in answer["error"]
    assert infer_json(model_server, {"inputs": [images_input(RED)]})[0] == 200


def test_an_unknown_model_is_404_and_bad_json_400(model_server):
    assert infer_json(model_server, {"inputs": []}, "/v2/models/absent/infer")[0] == 404
    status, _, body = call(model_server, "/v2/models/tiny/infer", b"{", {})
    assert status == 400 and "not JSON" in json.loads(body)["error"]


def test_the_lambda_handler_answers_an_oip_event_as_the_model_server_does(
    model_server, model_store
):
    event = {"model": {"name": "tiny"}, "oip": {"inputs": [images_input(RED)]}}
    script = (
        "import json, sys; from straightline_inference import lambda_handler; "
        "print(json.dumps(lambda_handler.handler(json.loads(sys.argv[1]), None)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(event)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "STRAIGHTLINE_MODEL_STORE": str(model_store.root),
            "OTEL_SDK_DISABLED": "true",
        },
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    (scores,) = answer["outputs"]
    assert scores["data"] == pytest.approx(v1_scores(model_server, RED, "image/jpeg"), abs=1e-6)


# Triton's own HTTP client, unchanged ----------------------------------------------------------


def tritonclient_on(model_server, tmp_path, port: str, token: str):
    """Runs a command of tests/support/tritonclient_calls.py against one of the model server's
    ports, with its images in tmp_path."""
    (tmp_path / "red.jpg").write_bytes(RED)
    (tmp_path / "green.png").write_bytes(GREEN)

    def run(command: str, *files: str) -> dict:
        address = f"127.0.0.1:{model_server.ports[port]}"
        return run_tritonclient(address, token, command, *(tmp_path / f for f in files))

    return run


@pytest.fixture
def triton_http(model_server, tmp_path):
    return tritonclient_on(model_server, tmp_path, "http", "-")


def test_tritonclient_http_checks_health_and_metadata(triton_http):
    answer = triton_http("http_health")
    assert (answer["live"], answer["ready"], answer["tiny_ready"]) == (True, True, True)
    assert answer["absent_ready"] is False
    assert answer["metadata"]["name"] == "tiny"


def test_tritonclient_http_infers_with_binary_data_the_models_own_scores(triton_http, model_server):
    rows = triton_http("http_infer_images", "red.jpg", "green.png")["scores"]
    expected = [
        v1_scores(model_server, RED, "image/jpeg"),
        v1_scores(model_server, GREEN, "image/png"),
    ]
    for row, scores in zip(rows, expected, strict=True):
        assert row == pytest.approx(scores, abs=1e-6)


def test_tritonclient_http_sends_fp32_json_and_gets_labels(triton_http):
    labels = [entry.split(":") for entry in triton_http("http_infer_fp32_top_2")["labels"]]
    assert len(labels) == 2 and all(label in CLASSES for _, _, label in labels)


def test_tritonclient_http_sees_a_bad_image_as_400(triton_http):
    status, message = triton_http("http_errors")["not_an_image"]
    assert status == "400" and "neither a JPEG nor a PNG" in message


# Triton's own gRPC client, unchanged, against the model server's --grpc-listen ----------------


@pytest.fixture
def triton_grpc(model_server, tokens, tmp_path):
    return tritonclient_on(model_server, tmp_path, "grpc", tokens.of(Role.CLIENT))


def test_tritonclient_grpc_checks_the_model_servers_health_and_metadata(triton_grpc):
    answer = triton_grpc("health")
    assert (answer["live"], answer["ready"], answer["tiny_ready"]) == (True, True, True)
    assert answer["absent_ready"] is False
    assert answer["metadata"]["name"] == "tiny"
    assert answer["metadata"]["outputs"][0]["name"] == "scores"


def test_tritonclient_grpc_gets_the_models_own_scores_as_over_rest(triton_grpc, model_server):
    answer = triton_grpc("infer_images", "red.jpg", "green.png")
    expected = [
        v1_scores(model_server, RED, "image/jpeg"),
        v1_scores(model_server, GREEN, "image/png"),
    ]
    for row, scores in zip(answer["scores"], expected, strict=True):
        assert row == pytest.approx(scores, abs=1e-6)
    assert answer["served_platform"] == ""  # no placement: the model server itself answered
    labels = [entry.split(":") for entry in triton_grpc("infer_pixels_top_2")["labels"]]
    assert len(labels) == 2 and all(label in CLASSES for _, _, label in labels)


def test_tritonclient_grpc_sees_the_protocols_errors(triton_grpc):
    assert_grpc_protocol_errors(triton_grpc("errors"))

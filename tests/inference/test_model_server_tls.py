"""The model server over HTTPS with client certificates (issue 15): on its own, and behind a
real Flask adapter that serves gRPC over mutual TLS and starts it with its own certificate."""

import json
import ssl
import urllib.error
import urllib.request

import pytest

from straightline.v1 import inference_pb2, inference_pb2_grpc
from straightline_common import devcerts
from straightline_common.processes import ServiceProcess
from straightline_common.tls import TlsFiles, https_client_context, tls_flags
from tests.inference.test_flask_adapter import predict_request
from tests.support.certs import rotate, served_certificate
from tests.support.models import image_bytes
from tests.support.procfs import children, command_line

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    devcerts.make_all(directory, days=1)
    other = tmp_path_factory.mktemp("other-ca")
    devcerts.make_all(other, days=1)
    return directory, other


def own(directory, name) -> TlsFiles:
    return TlsFiles(directory / f"{name}.pem", directory / f"{name}.key", directory / "ca.pem")


@pytest.fixture(scope="module")
def https_model_server(model_store, certs, tmp_path_factory):
    process = ServiceProcess(
        "straightline_inference.modelserver",
        [
            *("--store", str(model_store.root), "--listen", "127.0.0.1:0", "--threads", "2"),
            *tls_flags(own(certs[0], "adapter-flask")),
        ],
        tmp_path_factory.mktemp("https-modelserver"),
    )
    try:
        yield process.wait_ready(timeout=60)
    finally:
        process.terminate()


def predict(server, context: ssl.SSLContext | None, scheme="https"):
    request = urllib.request.Request(
        f"{scheme}://127.0.0.1:{server.ports['http']}/v1/models/tiny/predict?top_k=1",
        data=image_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return response.status, json.loads(response.read())


def test_a_client_with_a_certificate_of_the_ca_is_answered(https_model_server, certs):
    status, answer = predict(https_model_server, https_client_context(own(certs[0], "client")))
    assert status == 200 and answer["model"]["name"] == "tiny"


@pytest.mark.parametrize("stranger", ["no certificate", "another CA", "plain HTTP"])
def test_strangers_are_refused_before_any_request(https_model_server, certs, stranger):
    if stranger == "no certificate":
        context = ssl.create_default_context(cafile=certs[0] / "ca.pem")
    elif stranger == "another CA":
        context = https_client_context(own(certs[1], "client"))
    else:
        context = None
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        predict(https_model_server, context, "http" if stranger == "plain HTTP" else "https")
    status, _ = predict(https_model_server, https_client_context(own(certs[0], "client")))
    assert status == 200  # still serving


def test_a_flask_adapter_with_a_certificate_serves_through_an_https_model_server(
    start_adapter, certs, channels
):
    adapter = start_adapter("flask", "--threads", "1", *tls_flags(own(certs[0], "adapter-flask")))
    stub = inference_pb2_grpc.InferenceServiceStub(
        channels(adapter.address, tls=own(certs[0], "placer"))
    )
    answer = stub.Predict(predict_request(), timeout=60)
    assert answer.classes
    [model_server] = children(adapter.process.pid)
    command = command_line(model_server)
    assert "--tls-cert" in command and "--tls-client-ca" in command
    status = stub.GetStatus(inference_pb2.GetStatusRequest(), timeout=10).report
    assert status.capacity_total == 1 and not status.unavailable_reason


def test_a_rotated_certificate_is_served_from_the_next_connection(https_model_server, certs):
    address = f"127.0.0.1:{https_model_server.ports['http']}"
    client = own(certs[0], "client")
    before = served_certificate(address, client)
    cert = rotate(certs[0], "adapter-flask")
    after = served_certificate(address, client)
    assert before.serial_number != after.serial_number == cert.serial_number
    status, _ = predict(https_model_server, https_client_context(client))
    assert status == 200

"""Mutual TLS between real processes: the placer process with its certificate, a simulated
adapter with an adapter's, clients with an operator's or a client's; and the attacker's
certificates (expired, from another CA, of the wrong role). Loopback only."""

import grpc
import pytest
from cryptography import x509
from google.protobuf import duration_pb2, field_mask_pb2

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common import devcerts, tls
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.processes import health_status
from straightline_inference.simulated import SimulatedAdapter
from tests.placer.conftest import DOCKER, FLASK
from tests.support.certs import rotate, served_certificate
from tests.support.waiting import wait_until

MODEL = types_pb2.ModelRef(name="demo")
CODE = grpc.StatusCode


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    devcerts.make_all(directory, days=1)
    ca_key = devcerts.serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    expired = devcerts.make_leaf(ca_key, ca_cert, "operator/late", ["127.0.0.1"], days=-2)
    devcerts.write_key(directory / "expired.key", expired[0])
    devcerts.write_cert(directory / "expired.pem", expired[1])
    other = tmp_path_factory.mktemp("other-ca")
    devcerts.make_all(other, days=1)
    return directory, other


def files(directory, name) -> tls.TlsFiles:
    return tls.TlsFiles(directory / f"{name}.pem", directory / f"{name}.key", directory / "ca.pem")


def use(monkeypatch, tls_files: tls.TlsFiles) -> None:
    """This test process's TLS identity (what in-process adapters and health checks use)."""
    monkeypatch.setenv(tls.CERT_ENV, str(tls_files.cert))
    monkeypatch.setenv(tls.KEY_ENV, str(tls_files.key))
    monkeypatch.setenv(tls.CA_ENV, str(tls_files.ca))


@pytest.fixture
def placer(start_placer, certs):
    placer_files = files(certs[0], "placer")
    return start_placer(
        *("--heartbeat-timeout-s", "2"),
        *("--tls-cert", str(placer_files.cert), "--tls-key", str(placer_files.key)),
        *("--tls-client-ca", str(placer_files.ca)),
    )


@pytest.fixture
def flask(placer, certs, monkeypatch):
    use(monkeypatch, files(certs[0], "adapter-flask"))
    adapter = SimulatedAdapter(FLASK, placer.address, capacity=2, instance_id="flask-1").start()
    assert adapter.wait_registered()
    yield adapter
    adapter.stop()


def stub_as(channels, placer, tls_files: tls.TlsFiles):
    return placer_pb2_grpc.PlacerServiceStub(
        open_channel(placer.address, Role.CLIENT, tls=tls_files)
    )


def infer(stub) -> placer_pb2.InferResponse:
    request = placer_pb2.InferRequest(model=MODEL, payload=b"abc", content_type="image/png")
    return stub.Infer(request, timeout=5)


def test_requests_travel_over_mutual_tls_end_to_end(placer, flask, certs, channels, monkeypatch):
    use(monkeypatch, files(certs[0], "client"))
    assert health_status(placer.address) == 1  # over TLS, open to every certificate
    answer = infer(stub_as(channels, placer, files(certs[0], "client")))
    assert answer.served_instance_id == "flask-1" and flask.served == 1


def test_the_role_comes_from_the_certificate(placer, flask, certs, channels):
    policy = placer_pb2.UpdatePolicyRequest(
        policy=placer_pb2.Policy(heartbeat_timeout=duration_pb2.Duration(seconds=3)),
        update_mask=field_mask_pb2.FieldMask(paths=["heartbeat_timeout"]),
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub_as(channels, placer, files(certs[0], "client")).UpdatePolicy(policy, timeout=5)
    assert refused.value.code() == CODE.PERMISSION_DENIED
    assert "this caller is client" in refused.value.details()
    updated = stub_as(channels, placer, files(certs[0], "operator")).UpdatePolicy(policy, timeout=5)
    assert updated.policy.heartbeat_timeout.seconds == 3


@pytest.mark.parametrize(
    "attacker",
    ["expired", "other CA", "plaintext", "plaintext with a valid token"],
)
def test_strangers_cannot_even_connect(placer, flask, certs, channels, tokens, attacker):
    own, other = certs
    if attacker == "expired":
        channel = channels(placer.address, tls=files(own, "expired"))
    elif attacker == "other CA":
        channel = channels(placer.address, tls=files(other, "operator"))
    elif attacker == "plaintext":
        channel = channels(placer.address, role=None)
    else:
        channel = channels(placer.address, token=tokens.of(Role.OPERATOR))
    with pytest.raises(grpc.RpcError) as refused:
        infer(placer_pb2_grpc.PlacerServiceStub(channel))
    assert refused.value.code() == CODE.UNAVAILABLE
    assert infer(stub_as(channels, placer, files(own, "client"))).served_instance_id == "flask-1"


def test_an_instance_id_stays_its_adapters_after_the_stream_ends(
    placer, flask, certs, channels, monkeypatch
):
    flask.silence()  # its stream ends uncleanly; the instance stays until the heartbeat timeout
    use(monkeypatch, files(certs[0], "adapter-docker"))
    impostor = SimulatedAdapter(DOCKER, placer.address, capacity=100, instance_id="flask-1")
    impostor.start()
    try:
        assert not impostor.wait_registered(timeout=1.5)
        # After the timeout, the id is free for whoever registers it next.
        assert wait_until(impostor.wait_registered, timeout=10)
    finally:
        impostor.stop()


def test_an_adapter_certificate_reports_only_its_own_platform(
    placer, flask, certs, channels, monkeypatch
):
    use(monkeypatch, files(certs[0], "adapter-flask"))
    stream = placer_pb2_grpc.PlacerServiceStub(
        open_channel(placer.address, Role.ADAPTER, tls=files(certs[0], "adapter-flask"))
    )
    posing = types_pb2.InstanceReport(
        instance_id="docker-from-flask",
        platform=DOCKER,
        address="127.0.0.1:9",
        capacity_total=100,
        capacity_free=100,
        models=[MODEL],
    )
    with pytest.raises(grpc.RpcError) as refused:
        list(stream.Heartbeat(iter([placer_pb2.HeartbeatRequest(report=posing)]), timeout=5))
    assert refused.value.code() == CODE.PERMISSION_DENIED
    assert "adapter/flask, so it may report flask instances only, not docker" in (
        refused.value.details()
    )
    answer = infer(stub_as(channels, placer, files(certs[0], "client")))
    assert answer.served_instance_id == "flask-1"


def test_a_rotated_certificate_is_served_without_a_restart(placer, flask, certs, channels):
    own = certs[0]
    before = served_certificate(placer.address, files(own, "client"), alpn="h2")
    cert = rotate(own, "placer")
    after = served_certificate(placer.address, files(own, "client"), alpn="h2")
    assert before.serial_number != after.serial_number == cert.serial_number
    assert infer(stub_as(channels, placer, files(own, "client"))).served_instance_id == "flask-1"

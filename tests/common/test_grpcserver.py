"""GrpcServer: health before and after ready, error mapping in one place, server spans."""

import os
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry import trace

from straightline_common import errors
from straightline_common.auth import READERS, access_of
from straightline_common.grpcserver import GrpcServer
from straightline_common.processes import health_status
from straightline_common.telemetry import metadata_with_context

SERVICE = "test.Failing"


def _behaviour(request: bytes, context):
    kind = request.decode()
    if kind == "ok":
        return b"fine"
    if kind == "bug":
        raise KeyError("a secret detail")
    raise getattr(errors, kind)(f"{kind} happened; do something else")


def _register(server: grpc.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        _behaviour, request_deserializer=bytes, response_serializer=bytes
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Call": handler}),)
    )


@pytest.fixture
def server():
    server = GrpcServer(
        "127.0.0.1:0", [_register], [SERVICE], access_of(SERVICE, {"Call": READERS})
    )
    server.start()
    yield server
    server.stop(0)


@pytest.fixture
def call(server, channels):
    return channels(server.address).unary_unary(f"/{SERVICE}/Call")


def test_not_serving_until_marked_ready(server):
    assert health_status(server.address, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    server.mark_serving()
    assert health_status(server.address, SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(server.address) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT),
        ("NotFound", grpc.StatusCode.NOT_FOUND),
        ("AlreadyExists", grpc.StatusCode.ALREADY_EXISTS),
        ("FailedPrecondition", grpc.StatusCode.FAILED_PRECONDITION),
        ("ResourceExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("Unavailable", grpc.StatusCode.UNAVAILABLE),
        ("DeadlineExceeded", grpc.StatusCode.DEADLINE_EXCEEDED),
        ("Unauthenticated", grpc.StatusCode.UNAUTHENTICATED),
        ("PermissionDenied", grpc.StatusCode.PERMISSION_DENIED),
        ("Internal", grpc.StatusCode.INTERNAL),
    ],
)
def test_domain_errors_become_their_status_with_the_sentence(call, kind, code):
    with pytest.raises(grpc.RpcError) as raised:
        call(kind.encode(), timeout=5)
    assert raised.value.code() == code
    assert raised.value.details() == f"{kind} happened; do something else"


def test_unexpected_errors_are_internal_without_leaking_details(call):
    with pytest.raises(grpc.RpcError) as raised:
        call(b"bug", timeout=5)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in raised.value.details()
    assert call(b"ok", timeout=5) == b"fine"  # still serving


def test_server_span_continues_the_callers_trace(call, spans):
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("client") as client:
        call(b"ok", timeout=5, metadata=metadata_with_context())
        with pytest.raises(grpc.RpcError):
            call(b"NotFound", timeout=5, metadata=metadata_with_context())
    server_spans = [s for s in spans.get_finished_spans() if s.name == f"{SERVICE}/Call"]
    assert len(server_spans) == 2
    for span in server_spans:
        assert span.kind == trace.SpanKind.SERVER
        assert span.context.trace_id == client.get_span_context().trace_id
        assert span.parent.span_id == client.get_span_context().span_id
        assert span.attributes["rpc.method"] == "Call"
    assert server_spans[0].status.is_ok
    assert server_spans[1].status.status_code == trace.StatusCode.ERROR
    assert server_spans[1].attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


SIGNAL_TO_A_WORKER_THREAD = """
import signal, sys, threading
from straightline_common.grpcserver import ShutdownSignal

shutdown = ShutdownSignal()
worker = threading.Thread(target=lambda: signal.pthread_kill(threading.get_ident(), signal.SIGTERM))
threading.Timer(0.2, worker.start).start()
shutdown.wait_then_stop(lambda: print("stopped", flush=True))
"""


def test_a_sigterm_that_lands_on_another_thread_still_stops_the_service():
    # The kernel hands a process's signal to any thread that does not block it (gRPC runs
    # several); the main thread waiting for it must still see it.
    child = subprocess.run(
        [sys.executable, "-c", SIGNAL_TO_A_WORKER_THREAD],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "stopped"

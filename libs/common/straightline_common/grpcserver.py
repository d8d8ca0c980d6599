"""A gRPC server object shared by every service: health, reflection, tracing, error mapping.

`GrpcServer.start()` binds and starts with every service NOT_SERVING; the owner calls
`mark_serving()` once it is ready, and `stop(grace)` on shutdown (SIGTERM through
`ShutdownSignal`). Domain errors become gRPC status codes here and nowhere else.
"""

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent import futures

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from straightline_common import auth, errors, limits, tls
from straightline_common.telemetry import context_from_metadata

log = logging.getLogger(__name__)

# Open to every caller, untraced: health checks and reflection.
_OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


def status_of(error: errors.ServiceError) -> grpc.StatusCode:
    """The status code of a domain error (of its nearest known base class)."""
    return grpc.StatusCode[errors.code_name(error)]


class _CallInterceptor(grpc.ServerInterceptor):
    """Around every RPC but health and reflection: a SERVER span (parented by the caller's
    W3C context), the caller's identity checked against the service's access table, every
    request message checked against the limits, and errors mapped to status codes."""

    def __init__(self, tracer: trace.Tracer, access: auth.Access, tokens: auth.Tokens):
        self._tracer = tracer
        self._access = access
        self._tokens = tokens

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary:
            wrap, behaviour = grpc.unary_unary_rpc_method_handler, handler.unary_unary
            wrapped = self._unary(behaviour, method, metadata, streamed_requests=False)
        elif handler.unary_stream:
            wrap, behaviour = grpc.unary_stream_rpc_method_handler, handler.unary_stream
            wrapped = self._streaming(behaviour, method, metadata, streamed_requests=False)
        elif handler.stream_stream:
            wrap, behaviour = grpc.stream_stream_rpc_method_handler, handler.stream_stream
            wrapped = self._streaming(behaviour, method, metadata, streamed_requests=True)
        else:
            wrap, behaviour = grpc.stream_unary_rpc_method_handler, handler.stream_unary
            wrapped = self._unary(behaviour, method, metadata, streamed_requests=True)
        return wrap(wrapped, handler.request_deserializer, handler.response_serializer)

    def _span(self, method: str, metadata):
        service, _, name = method.lstrip("/").partition("/")
        return self._tracer.start_as_current_span(
            method.lstrip("/"),
            context=context_from_metadata(metadata),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        )

    def _admit(self, method, metadata, context, request, streamed_requests: bool):
        """The caller's identity, authorized; the request (or its stream) limit-checked."""
        identity = tls.peer_identity(context.auth_context())
        if identity is None:
            token = auth.bearer_token(metadata)
            identity = self._tokens.identify(token) if token else None
        auth.set_current_identity(auth.authorize(identity, method, self._access))
        if streamed_requests:
            return _checked_each(request)
        _check(request)
        return request

    def _unary(self, behaviour, method, metadata, streamed_requests):
        def traced(request, context):
            with self._span(method, metadata) as span:
                try:
                    request = self._admit(method, metadata, context, request, streamed_requests)
                    return behaviour(request, context)
                except Exception as error:  # every error is mapped or logged
                    _abort(context, span, error)

        return traced

    def _streaming(self, behaviour, method, metadata, streamed_requests):
        def traced(request, context):
            with self._span(method, metadata) as span:
                try:
                    request = self._admit(method, metadata, context, request, streamed_requests)
                    yield from behaviour(request, context)
                except Exception as error:  # every error is mapped or logged
                    _abort(context, span, error)

        return traced


def _checked_each(requests):
    for request in requests:
        _check(request)
        yield request


def _check(request) -> None:
    if isinstance(request, Message):  # generic handlers may take raw bytes
        limits.check_message(request)


def _abort(context: grpc.ServicerContext, span: trace.Span, error: Exception):
    if isinstance(error, errors.ServiceError):
        code, message = status_of(error), str(error)
    elif context.code() not in (None, grpc.StatusCode.OK) or not context.is_active():
        raise error  # already aborted by the servicer, or the client went away
    else:
        log.exception("unexpected error in %s", type(error).__name__)
        code, message = grpc.StatusCode.INTERNAL, "internal error; the server log has the details"
    span.set_status(Status(StatusCode.ERROR, message))
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    context.abort(code, message)


class GrpcServer:
    """A gRPC server on one address with health checking and reflection.

    `register` functions add the service's servicers (e.g. `add_PlacerServiceServicer_to_server`
    bound to an instance); `service_names` are the full names reported by health and reflection;
    `access` says which roles may call each method (`auth.access_of`), proved by the client's
    certificate with `tls_files` (mutual TLS), else by `tokens` (default: the deployment's
    tokens file, created when absent).
    With `max_concurrent_rpcs`, an RPC beyond that many (streams included) is refused at once
    with RESOURCE_EXHAUSTED; without, it waits for a worker thread, however long.
    """

    def __init__(
        self,
        address: str,
        register: Iterable[Callable[[grpc.Server], None]],
        service_names: Iterable[str],
        access: auth.Access,
        tokens: auth.Tokens | None = None,
        tls_files: tls.TlsFiles | None = None,
        max_workers: int = 32,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_concurrent_rpcs: int | None = None,
    ):
        self._requested_address = address
        self._tls_files = tls_files
        self._service_names = tuple(service_names)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            interceptors=[
                _CallInterceptor(
                    trace.get_tracer("straightline.grpc"),
                    access,
                    tokens or auth.load_tokens(create=True),
                )
            ],
            maximum_concurrent_rpcs=max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        for add in register:
            add(self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0

    @property
    def address(self) -> str:
        host = self._requested_address.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> int:
        """Binds (port 0 picks a free port), starts NOT_SERVING, and returns the bound port."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._tls_files is None:
            self.port = self._server.add_insecure_port(self._requested_address)
        else:
            credentials = tls.server_credentials(self._tls_files)
            self.port = self._server.add_secure_port(self._requested_address, credentials)
        if self.port == 0:
            raise OSError(f"could not bind {self._requested_address}; is the port in use?")
        self._server.start()
        return self.port

    def mark_serving(self) -> None:
        self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 5.0) -> None:
        """Reports NOT_SERVING, refuses new RPCs, and waits up to `grace` seconds for the rest."""
        self._health.enter_graceful_shutdown()
        self._server.stop(grace).wait()

    def wait(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)

    def _set_health(self, status) -> None:
        for name in ("", *self._service_names):
            self._health.set(name, status)


class ShutdownSignal:
    """SIGTERM and SIGINT, caught from the moment this is made. Make it in the main thread
    before starting the service: a signal that arrives while it starts, once its port is
    known, then shuts it down cleanly instead of killing it."""

    def __init__(self):
        self._received = threading.Event()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self._received.set()

    def wait_then_stop(self, stop: Callable[[], None], tracer_provider=None) -> None:
        """Blocks until a signal has come, then calls `stop` and flushes the tracer
        provider's last spans (when there is one)."""
        self._received.wait()
        stop()
        if tracer_provider is not None:
            tracer_provider.shutdown()

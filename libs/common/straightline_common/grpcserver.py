"""A gRPC server object shared by every service: health, reflection, tracing, error mapping.

`GrpcServer.start()` binds and starts with every service NOT_SERVING; the owner calls
`mark_serving()` once it is ready, and `stop(grace)` on shutdown (SIGTERM through
`ShutdownSignal`). Domain errors become gRPC status codes here and nowhere else.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Any, TypeAlias, cast

import grpc
from google.protobuf.message import Message
from grpc import ServicerContext
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from straightline_common import auth, errors, limits, tls
from straightline_common.telemetry import context_from_metadata

log = logging.getLogger(__name__)

# A servicer method as gRPC calls it: (request or request iterator, context).
Behaviour = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


# Server reflection v1, which grpcurl and current clients ask for first; grpcio-reflection
# serves only v1alpha, whose messages are the same on the wire, so its servicer answers both.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
# Open to every caller, untraced: health checks and reflection.
_OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


def status_of(error: errors.ServiceError) -> grpc.StatusCode:
    """The status code of a domain error (of its nearest known base class)."""
    return grpc.StatusCode[errors.code_name(error)]


class CallSlots:
    """At most `total` calls of a kind at once, and `per_peer` from one host: streams so
    that held ones cannot take the threads of unary calls and health checks, unary calls so
    that a burst is refused at once instead of queueing for threads."""

    def __init__(self, kind: str, total: int, per_peer: int) -> None:
        self.kind, self.total, self.per_peer = kind, total, per_peer
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def held(self, peer: str) -> Iterator[None]:
        with self._lock:
            if sum(self._open.values()) >= self.total:
                raise errors.ResourceExhausted(
                    f"this server takes at most {self.total} {self.kind} at once; retry later"
                )
            if self._open.get(peer, 0) >= self.per_peer:
                raise errors.ResourceExhausted(
                    f"at most {self.per_peer} {self.kind} at once from one host; close one first"
                )
            self._open[peer] = self._open.get(peer, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._open[peer] -= 1
                if not self._open[peer]:
                    del self._open[peer]


def _peer_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5000' -> 'ipv4:127.0.0.1' (one host, whichever port it calls from)."""
    return peer.rpartition(":")[0] or peer


class _CallInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Around every RPC but health and reflection: a SERVER span (parented by the caller's
    W3C context), the caller's identity checked against the service's access table, every
    request message checked against the limits, and errors mapped to status codes."""

    def __init__(
        self,
        tracer: trace.Tracer,
        access: auth.Access,
        tokens: auth.Tokens | None,
        unary: CallSlots,
        streams: CallSlots,
    ) -> None:
        self._tracer = tracer
        self._access = access
        self._tokens = tokens
        self._calls = unary
        self._streams = streams

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        return self.wrap(continuation(handler_call_details), handler_call_details)

    def wrap(
        self, handler: Handler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        """The handler, inside the span, the authorization, the limits and the error mapping
        (coroutine methods, under an asyncio server, inside coroutines)."""
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        call = _Call(method, handler_call_details.invocation_metadata, handler.request_deserializer)
        if handler.unary_unary:
            wrap, wrapped = grpc.unary_unary_rpc_method_handler, self._unary(handler.unary_unary)
        elif handler.unary_stream:
            wrap, wrapped = (
                grpc.unary_stream_rpc_method_handler,
                self._streaming(handler.unary_stream),
            )
        elif handler.stream_stream:
            wrap = grpc.stream_stream_rpc_method_handler
            wrapped = self._streaming(handler.stream_stream, streamed_requests=True)
        elif handler.stream_unary:
            wrap = grpc.stream_unary_rpc_method_handler
            wrapped = self._unary(handler.stream_unary, streamed_requests=True)
        else:
            return handler
        # Requests arrive as bytes and are parsed in _admit: a message that does not parse is
        # INVALID_ARGUMENT there, not an INTERNAL (and a wedged call) inside gRPC.
        return wrap(partial(wrapped, call), None, handler.response_serializer)

    def _span(self, call: _Call) -> contextlib.AbstractContextManager[trace.Span]:
        service, _, name = call.method.lstrip("/").partition("/")
        return self._tracer.start_as_current_span(
            call.method.lstrip("/"),
            context=context_from_metadata(call.metadata),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            record_exception=False,
            set_status_on_exception=False,
        )

    def _admit(
        self,
        call: _Call,
        context: ServicerContext | grpc.aio.ServicerContext,  # type: ignore[type-arg]
        request: Any,
        streamed_requests: bool,
    ) -> Any:
        """The caller's identity, authorized; the request (or each of its stream) parsed and
        limit-checked."""
        # gRPC gives each auth property as a list of values; its type stubs say bytes.
        identity = tls.peer_identity(cast(Mapping[str, list[bytes]], context.auth_context()))
        if identity is None and self._tokens is not None:
            token = auth.bearer_token(call.metadata)
            identity = self._tokens.identify(token) if token else None
        auth.set_current_identity(auth.authorize(identity, call.method, self._access))
        if not streamed_requests:
            return _parsed(call.parse, request)
        if isinstance(request, AsyncIterable):
            return (_parsed(call.parse, data) async for data in request)
        return (_parsed(call.parse, data) for data in request)

    def _unary(self, behaviour: Behaviour, streamed_requests: bool = False) -> Behaviour:
        if inspect.iscoroutinefunction(behaviour):
            return self._awaited(behaviour)

        def traced(call: _Call, request: Any, context: ServicerContext) -> Any:
            with self._span(call) as span:
                try:
                    request = self._admit(call, context, request, streamed_requests)
                    with self._calls.held(_peer_host(context.peer())):
                        return behaviour(request, context)
                except Exception as error:  # every error is mapped or logged
                    _abort(context, span, error)

        return traced

    def _awaited(self, behaviour: Behaviour) -> Behaviour:
        async def traced(call: _Call, request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            with self._span(call) as span:
                try:
                    request = self._admit(call, context, request, streamed_requests=False)
                    with self._calls.held(_peer_host(context.peer())):
                        return await behaviour(request, context)
                except Exception as error:  # every error is mapped or logged
                    await context.abort(*_failure(context, span, error))

        return traced

    def _streaming(self, behaviour: Behaviour, streamed_requests: bool = False) -> Behaviour:
        if inspect.isasyncgenfunction(behaviour):
            return self._streamed_async(behaviour, streamed_requests)

        def traced(call: _Call, request: Any, context: ServicerContext) -> Iterator[Any]:
            with self._span(call) as span:
                try:
                    request = self._admit(call, context, request, streamed_requests)
                    with self._streams.held(_peer_host(context.peer())):
                        yield from behaviour(request, context)
                except Exception as error:  # every error is mapped or logged
                    _abort(context, span, error)

        return traced

    def _streamed_async(self, behaviour: Behaviour, streamed_requests: bool) -> Behaviour:
        async def traced(
            call: _Call,
            request: Any,
            context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
        ) -> AsyncIterator[Any]:
            with self._span(call) as span:
                try:
                    request = self._admit(call, context, request, streamed_requests)
                    with self._streams.held(_peer_host(context.peer())):
                        async for response in behaviour(request, context):
                            yield response
                except Exception as error:  # every error is mapped or logged
                    await context.abort(*_failure(context, span, error))

        return traced


@dataclass(frozen=True)
class _Call:
    method: str
    metadata: tuple[tuple[str, str | bytes], ...]
    parse: Callable[[bytes], object] | None


def _parsed(parse: Callable[[bytes], object] | None, data: bytes) -> object:
    """The request message of `data`, limit-checked (raw bytes for handlers without a
    deserializer)."""
    if parse is None:
        return data
    try:
        message = parse(data)
    except Exception:  # DecodeError, or whatever a custom deserializer raises
        raise errors.InvalidArgument(
            "the request does not parse as this method's message; are the client's stubs "
            "generated from straightline/v1?"
        ) from None
    if isinstance(message, Message):
        limits.check_message(message)
    return message


def _abort(context: grpc.ServicerContext, span: trace.Span, error: Exception) -> None:
    context.abort(*_failure(context, span, error))


def _failure(context: Any, span: trace.Span, error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status a failed call ends with, recorded on its span; `error` itself, raised again,
    when the call has already ended."""
    if isinstance(error, errors.ServiceError):
        code, message = status_of(error), str(error)
    elif _ended(context, error):
        raise error
    else:
        log.exception("unexpected error in %s", type(error).__name__)
        code, message = grpc.StatusCode.INTERNAL, "internal error; the server log has the details"
    span.set_status(Status(StatusCode.ERROR, message))
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    return code, message


def _ended(context: Any, error: Exception) -> bool:
    """Whether the servicer already aborted the call or the client went away. Contexts differ:
    the thread-pool server's has code() and is_active(), asyncio's code() only, and the one
    asyncio gives a method run on its thread pool neither."""
    if isinstance(error, grpc.aio.AbortError):
        return True
    code = getattr(context, "code", None)
    is_active = getattr(context, "is_active", None)
    aborted = code is not None and code() not in (None, grpc.StatusCode.OK)
    return aborted or (is_active is not None and not is_active())


# What a connection may cost: pings no more often than every 10 s without data (clients
# that ping faster are sent away), idle connections closed after 5 min, and every connection
# after 30 min (plus 1 min to finish its calls), which bounds how long a request body may
# take to arrive. Heartbeat streams reconnect on their own.
CONNECTION_LIMITS = (
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.max_connection_idle_ms", 5 * 60_000),
    ("grpc.max_connection_age_ms", 30 * 60_000),
    ("grpc.max_connection_age_grace_ms", 60_000),
)


_SPARE_THREADS = 4


class GrpcServer:
    """A gRPC server on one address with health checking and reflection.

    `register` functions add the service's servicers (e.g. `add_PlacerServiceServicer_to_server`
    bound to an instance); `service_names` are the full names reported by health and reflection;
    `access` says which roles may call each method (`auth.access_of`), proved by the client's
    certificate with `tls_files` (mutual TLS), else by `tokens` (default: the deployment's
    tokens file, created when absent; with TLS, none unless given).
    `max_workers` threads serve unary calls (health checks among them) and `max_streams` more
    serve streams, of which one host may hold `max_streams_per_peer`: a stream beyond those
    is refused with RESOURCE_EXHAUSTED, so held streams never take the unary calls' threads.
    A unary call beyond `max_concurrent_rpcs` (default: `max_workers`) is refused at once
    with RESOURCE_EXHAUSTED. Health checks and reflection count against neither limit.
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
        max_streams: int = 64,
        max_streams_per_peer: int = 16,
    ) -> None:
        self._requested_address = address
        self._tls_files = tls_files
        self._service_names = tuple(service_names)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        interceptor = call_interceptor(
            access,
            tokens,
            tls_files,
            max_concurrent_rpcs or max_workers,
            max_streams,
            max_streams_per_peer,
        )
        self._server = grpc.server(
            worker_threads(max_workers + max_streams),
            interceptors=[interceptor],
            options=server_options(max_message_bytes),
        )
        add_services(self._server, register, self._service_names, self._health)
        self.port = 0

    @property
    def address(self) -> str:
        host = self._requested_address.rpartition(":")[0]
        return f"{host}:{self.port}"

    def start(self) -> int:
        """Binds (port 0 picks a free port), starts NOT_SERVING, and returns the bound port."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = bind(self._server, self._requested_address, self._tls_files)
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

    def _set_health(self, status: int) -> None:
        for name in ("", *self._service_names):
            self._health.set(name, status)


def call_interceptor(
    access: auth.Access,
    tokens: auth.Tokens | None,
    tls_files: tls.TlsFiles | None,
    max_calls: int,
    max_streams: int,
    max_streams_per_peer: int,
) -> _CallInterceptor:
    """The interceptor of every service's server: identities proved by certificate, else by
    `tokens` (default: the deployment's tokens file, created when absent; with TLS, none unless
    given), and the limits on calls and streams at once."""
    return _CallInterceptor(
        trace.get_tracer("straightline.grpc"),
        access,
        tokens if tokens or tls_files else auth.load_tokens(create=True),
        CallSlots("calls", max_calls, max_calls),
        CallSlots("streams", max_streams, max_streams_per_peer),
    )


def worker_threads(count: int) -> futures.ThreadPoolExecutor:
    """`count` threads, and a few more so that health checks (outside every limit) always
    find one."""
    return futures.ThreadPoolExecutor(count + _SPARE_THREADS, thread_name_prefix="grpc")


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *CONNECTION_LIMITS,
    ]


def add_services(
    server: Any,
    register: Iterable[Callable[[Any], None]],
    service_names: tuple[str, ...],
    health_servicer: Any,
) -> None:
    """The services' servicers, health, and reflection (v1alpha and v1) of them all."""
    for add in register:
        add(server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection((*names, REFLECTION_V1), server)
    server.add_generic_rpc_handlers((_reflection_v1(names),))


def bind(server: Any, address: str, tls_files: tls.TlsFiles | None) -> int:
    """Binds `address` (port 0: a free port), over mutual TLS when `tls_files` are given;
    returns the port."""
    if tls_files is None:
        port = int(server.add_insecure_port(address))
    else:
        port = int(server.add_secure_port(address, tls.server_credentials(tls_files)))
    if port == 0:
        raise OSError(f"could not bind {address}; is the port in use?")
    return port


def _reflection_v1(service_names: Iterable[str]) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
    servicer = reflection.ReflectionServicer((*service_names, REFLECTION_V1))
    return grpc.method_handlers_generic_handler(
        REFLECTION_V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )


SIGNAL_POLL_S = 0.5


class ShutdownSignal:
    """SIGTERM and SIGINT, caught from the moment this is made. Make it in the main thread
    before starting the service: a signal that arrives while it starts, once its port is
    known, then shuts it down cleanly instead of killing it."""

    def __init__(self) -> None:
        self._received = threading.Event()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self._received.set()

    def wait_then_stop(
        self, stop: Callable[[], None], tracer_provider: TracerProvider | None = None
    ) -> None:
        """Blocks until a signal has come, then calls `stop` and flushes the tracer
        provider's last spans (when there is one)."""
        # Timed waits: a signal that the kernel hands to another thread (gRPC's own, the
        # pools') does not interrupt an untimed wait, and Python runs its handler in the main
        # thread only when that thread next runs bytecode.
        while not self._received.wait(SIGNAL_POLL_S):
            pass
        stop()
        if tracer_provider is not None:
            tracer_provider.shutdown()

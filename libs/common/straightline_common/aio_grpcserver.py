"""`GrpcServer`'s twin on `grpc.aio`, for a service whose calls mostly wait (the placer: a
request spends its time on its way to a platform): coroutine methods run as tasks on an event
loop, so that thousands can be in flight without a thread each; the service's other methods
(control calls, streams) run on a thread pool as under `GrpcServer`. Same health, reflection,
identities, limits, tracing and error mapping (the same interceptor).

The event loop has a thread of its own, so that the owner keeps plain `start()`, `stop(grace)`
and `mark_serving()`; `run(coroutine)` runs one on the loop and waits for its result.
"""

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2

from straightline_common import auth, tls
from straightline_common.grpcserver import (
    add_services,
    bind,
    call_interceptor,
    server_options,
    worker_threads,
)

T = TypeVar("T")


class _Intercepted(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """The services' interceptor, as asyncio calls one."""

    def __init__(self, calls: Any) -> None:
        self._calls = calls

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        return self._calls.wrap(await continuation(handler_call_details), handler_call_details)


class AsyncGrpcServer:
    """A gRPC server on one address with health checking and reflection, on `grpc.aio`.

    Arguments as `GrpcServer`'s, except: `max_workers` threads serve the methods that are not
    coroutines (with `max_streams` more for streams); a unary call beyond
    `max_concurrent_rpcs` at once, coroutine or not, is refused with RESOURCE_EXHAUSTED.
    `on_stop` coroutines run on the loop once the server has stopped (closing the service's
    own asyncio channels, say)."""

    def __init__(
        self,
        address: str,
        register: Iterable[Callable[[Any], None]],
        service_names: Iterable[str],
        access: auth.Access,
        tokens: auth.Tokens | None = None,
        tls_files: tls.TlsFiles | None = None,
        max_workers: int = 32,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_concurrent_rpcs: int = 1024,
        max_streams: int = 64,
        max_streams_per_peer: int = 16,
    ) -> None:
        self._requested_address = address
        self._tls_files = tls_files
        self._service_names = tuple(service_names)
        self.on_stop: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio", daemon=True)
        self._thread.start()
        interceptor = call_interceptor(
            access, tokens, tls_files, max_concurrent_rpcs, max_streams, max_streams_per_peer
        )

        async def make() -> tuple[grpc.aio.Server, health_async.HealthServicer]:
            server = grpc.aio.server(
                migration_thread_pool=worker_threads(max_workers + max_streams),
                interceptors=[_Intercepted(interceptor)],
                options=server_options(max_message_bytes),
            )
            health = health_async.HealthServicer()
            add_services(server, register, self._service_names, health)
            return server, health

        self._server, self._health = self.run(make())
        self.port = 0

    @property
    def address(self) -> str:
        host = self._requested_address.rpartition(":")[0]
        return f"{host}:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs `coroutine` on the server's loop and returns its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def start(self) -> int:
        """Binds (port 0 picks a free port), starts NOT_SERVING, and returns the bound port."""

        async def start() -> int:
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            port = bind(self._server, self._requested_address, self._tls_files)
            await self._server.start()
            return port

        self.port = self.run(start())
        return self.port

    def mark_serving(self) -> None:
        self.run(self._set_health(health_pb2.HealthCheckResponse.SERVING))

    def stop(self, grace: float | None = 5.0) -> None:
        """Reports NOT_SERVING, refuses new RPCs, waits up to `grace` seconds for the rest, runs
        the `on_stop` coroutines, then ends the loop and its thread."""
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)
            for then in self.on_stop:
                await then()

        try:
            self.run(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    async def _set_health(self, status: int) -> None:
        for name in ("", *self._service_names):
            await self._health.set(name, status)

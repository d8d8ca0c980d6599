"""A bare gRPC echo, served exactly as the services are (GrpcServer: same thread pool,
interceptor, health and reflection, same tracing set-up): the floor for the placer's RPCs."""

import sys

import grpc

from straightline_common.auth import READERS, access_of
from straightline_common.grpcserver import GrpcServer, ShutdownSignal
from straightline_common.processes import write_port_file
from straightline_common.telemetry import configure_tracing
from straightline_common.tls import tls_from_environ

SERVICE = "bench.Echo"


def _identity(data: bytes) -> bytes:
    return data


def _register(server: grpc.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        lambda request, context: request,
        request_deserializer=_identity,
        response_serializer=_identity,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )


def main(port_file: str) -> None:
    provider = configure_tracing("bench-echo")
    access = access_of(SERVICE, {"Echo": READERS})
    server = GrpcServer(
        "127.0.0.1:0", [_register], [SERVICE], access, tls_files=tls_from_environ(), max_workers=64
    )
    shutdown = ShutdownSignal()
    server.start()
    server.mark_serving()
    write_port_file(port_file, {"grpc": server.port})
    shutdown.wait_then_stop(lambda: server.stop(1), provider)


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--port-file") + 1])

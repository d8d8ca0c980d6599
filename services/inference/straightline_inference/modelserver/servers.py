"""The WSGI servers under the model server's app: waitress for HTTP, cheroot for HTTPS
(waitress has no TLS). Either has a fixed number of worker threads (the server's capacity)
and is bound before it serves, so that port 0 picks a free port the caller can read."""

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import waitress
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from flask import Flask

from straightline_common.tls import RotatingHttpsContext, TlsFiles

IDENT = "straightline-modelserver"
# Connections waiting to be accepted (cheroot's default, 5, refuses a burst).
_BACKLOG = 128


@dataclass(frozen=True)
class Bound:
    port: int
    run: Callable[[], None]  # serves until `close`
    close: Callable[[], None]


def http_server(app: Flask, host: str, port: int, threads: int) -> Bound:
    listener = socket.create_server((host, port), backlog=_BACKLOG)
    server = waitress.create_server(app, sockets=[listener], threads=threads, ident=IDENT)
    return Bound(listener.getsockname()[1], server.run, server.close)


def https_server(app: Flask, host: str, port: int, threads: int, tls: TlsFiles) -> Bound:
    """HTTPS that requires a client certificate signed by the deployment's CA."""
    server = wsgi.Server(
        (host, port), app, numthreads=threads, server_name=IDENT, request_queue_size=_BACKLOG
    )
    server.ssl_adapter = _RotatingSSLAdapter(tls)
    server.prepare()  # binds
    return Bound(server.bind_addr[1], server.serve, server.stop)


class _RotatingSSLAdapter(BuiltinSSLAdapter):
    """cheroot's TLS with the deployment's context, read again when its files change."""

    def __init__(self, tls: TlsFiles) -> None:
        super().__init__(str(tls.cert), str(tls.key))
        self._contexts = RotatingHttpsContext(tls)
        self.context = self._contexts.current()

    def wrap(self, sock: socket.socket) -> Any:
        self.context = self._contexts.current()
        return super().wrap(sock)  # type: ignore[no-untyped-call]

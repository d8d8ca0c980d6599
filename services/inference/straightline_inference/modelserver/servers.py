"""The WSGI servers under the model server's app: waitress for HTTP, cheroot for HTTPS
(waitress has no TLS). Either has a fixed number of worker threads (the server's capacity)
and is bound before it serves, so that port 0 picks a free port the caller can read."""

import socket
from collections.abc import Callable
from dataclasses import dataclass

import waitress
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from straightline_common.tls import TlsFiles, https_server_context

IDENT = "straightline-modelserver"
# Connections waiting to be accepted (cheroot's default, 5, refuses a burst).
_BACKLOG = 128


@dataclass(frozen=True)
class Bound:
    port: int
    run: Callable[[], None]  # serves until `close`
    close: Callable[[], None]


def http_server(app, host: str, port: int, threads: int) -> Bound:
    listener = socket.create_server((host, port), backlog=_BACKLOG)
    server = waitress.create_server(app, sockets=[listener], threads=threads, ident=IDENT)
    return Bound(listener.getsockname()[1], server.run, server.close)


def https_server(app, host: str, port: int, threads: int, tls: TlsFiles) -> Bound:
    """HTTPS that requires a client certificate signed by the deployment's CA."""
    server = wsgi.Server(
        (host, port), app, numthreads=threads, server_name=IDENT, request_queue_size=_BACKLOG
    )
    adapter = BuiltinSSLAdapter(str(tls.cert), str(tls.key))
    adapter.context = https_server_context(tls)
    server.ssl_adapter = adapter
    server.prepare()  # binds
    return Bound(server.bind_addr[1], server.serve, server.stop)

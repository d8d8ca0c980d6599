"""Client channels of every StraightLine caller (adapters, placer, CLIs, demo, benchmarks):
each call carries the caller's credentials: its certificate over mutual TLS when TLS is
configured (`tls.py`), else its role's bearer token (`auth.py`)."""

import collections

import grpc

from straightline_common.auth import Role, Tokens, load_tokens
from straightline_common.tls import TlsFiles, channel_credentials, tls_from_environ


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._with_token(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._with_token(details), request_iterator)


def open_channel(
    address: str,
    role: Role,
    options=(),
    tokens: Tokens | None = None,
    tls: TlsFiles | None = None,
) -> grpc.Channel:
    """A channel to `address` whose calls prove who calls: with TLS (`tls`, else the
    STRAIGHTLINE_TLS_* variables) the certificate's identity, whatever `role` says; without,
    `role`'s token (from `tokens`, else the deployment's tokens file)."""
    tls = tls or tls_from_environ()
    if tls is not None:
        return grpc.secure_channel(address, channel_credentials(tls), options=options)
    return with_token(address, (tokens or load_tokens()).of(role), options)


def transport_channel(address: str) -> grpc.Channel:
    """A channel with no caller credentials, over TLS when the environment configures it:
    for health checks, which are open to everyone."""
    tls = tls_from_environ()
    if tls is not None:
        return grpc.secure_channel(address, channel_credentials(tls))
    return grpc.insecure_channel(address)


def with_token(address: str, token: str, options=()) -> grpc.Channel:
    """A channel to `address` whose calls carry `token`."""
    return grpc.intercept_channel(
        grpc.insecure_channel(address, options=options), _BearerToken(token)
    )

"""Client channels of every StraightLine caller (adapters, placer, CLIs, demo, benchmarks):
each call carries the caller's credentials for its role (`auth.py`)."""

import collections

import grpc

from straightline_common.auth import Role, Tokens, load_tokens


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
    address: str, role: Role, options=(), tokens: Tokens | None = None
) -> grpc.Channel:
    """A channel to `address` whose calls prove `role` (a token from the deployment's tokens
    file unless `tokens` are given)."""
    return with_token(address, (tokens or load_tokens()).of(role), options)


def with_token(address: str, token: str, options=()) -> grpc.Channel:
    """A channel to `address` whose calls carry `token`."""
    return grpc.intercept_channel(
        grpc.insecure_channel(address, options=options), _BearerToken(token)
    )

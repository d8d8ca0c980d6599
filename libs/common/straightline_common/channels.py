"""Client channels of every StraightLine caller (adapters, placer, CLIs, demo, benchmarks):
each call carries the caller's credentials: its certificate over mutual TLS when TLS is
configured (`tls.py`), else its role's bearer token (`auth.py`).

An address may name several servers, "127.0.0.1:50051,127.0.0.1:50052" (IP literals: gRPC's
`ipv4:` target): calls are balanced round robin over those that answer, and one that finds its
server unavailable is retried once on another. A DNS name with several addresses does the same
as `dns:///name:port` with the same service config (compose replicas, a Kubernetes headless
service). Every channel reconnects within half a second of its server's return (gRPC's default
backoff grows to two minutes)."""

import collections
import json
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from straightline_common.auth import Role, Tokens, load_tokens
from straightline_common.tls import TlsFiles, channel_credentials, tls_from_environ

# gRPC channel options, and an interceptor's next step.
Options = Sequence[tuple[str, Any]]
Continuation = Callable[..., Any]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    def __init__(self, token: str) -> None:
        self._header = _authorization(token)

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Continuation, details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(
        self, continuation: Continuation, details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(
        self, continuation: Continuation, details: grpc.ClientCallDetails, requests: Any
    ) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(
        self, continuation: Continuation, details: grpc.ClientCallDetails, requests: Any
    ) -> Any:
        return continuation(self._with_token(details), requests)


def _authorization(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def open_channel(
    address: str,
    role: Role,
    options: Options = (),
    tokens: Tokens | None = None,
    tls: TlsFiles | None = None,
) -> grpc.Channel:
    """A channel to `address` whose calls prove who calls: with TLS (`tls`, else the
    STRAIGHTLINE_TLS_* variables) the certificate's identity, whatever `role` says; without,
    `role`'s token (from `tokens`, else the deployment's tokens file)."""
    tls = tls or tls_from_environ()
    if tls is not None:
        return _secure(address, tls, options)
    return with_token(address, (tokens or load_tokens()).of(role), options)


def open_aio_channel(
    address: str,
    role: Role,
    options: Options = (),
    tokens: Tokens | None = None,
    tls: TlsFiles | None = None,
) -> tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]:
    """An asyncio channel to `address` (to be used on the event loop that makes it), and the
    metadata each call on it must carry: with TLS none (the certificate proves who calls),
    without, `role`'s token. The token travels in each call's metadata rather than through a
    client interceptor, which under asyncio costs a task per call."""
    tls = tls or tls_from_environ()
    if tls is not None:
        target, secure_options = _secure_target(address, options)
        channel = grpc.aio.secure_channel(target, channel_credentials(tls), secure_options)
        return channel, ()
    token = (tokens or load_tokens()).of(role)
    channel = grpc.aio.insecure_channel(*_target(address, options))
    return channel, (_authorization(token),)


def transport_channel(address: str) -> grpc.Channel:
    """A channel with no caller credentials, over TLS when the environment configures it:
    for health checks, which are open to everyone."""
    tls = tls_from_environ()
    if tls is not None:
        return _secure(address, tls, ())
    return grpc.insecure_channel(*_target(address, ()))


def with_token(address: str, token: str, options: Options = ()) -> grpc.Channel:
    """A channel to `address` whose calls carry `token`."""
    return grpc.intercept_channel(
        grpc.insecure_channel(*_target(address, options)), _BearerToken(token)
    )


# Reconnect within half a second of a server's return; the defaults wait up to 120 s.
_RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
_RETRY_UNAVAILABLE_ONCE = {
    "maxAttempts": 2,
    "initialBackoff": "0.05s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# Over several placers: round robin among those that answer, a call that finds its placer gone
# retried once on another, and an inference call made while none answers waiting for one
# within its deadline (a restart then fails nothing) rather than failing at once.
_SEVERAL_SERVERS_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [
                    {"service": "straightline.v1.PlacerService", "method": "Infer"},
                    {"service": "inference.GRPCInferenceService", "method": "ModelInfer"},
                ],
                "waitForReady": True,
                "retryPolicy": _RETRY_UNAVAILABLE_ONCE,
            },
            {"name": [{}], "retryPolicy": _RETRY_UNAVAILABLE_ONCE},  # every other method
        ],
    }
)


def _target(address: str, options: Options) -> tuple[str, list[tuple[str, Any]]]:
    """gRPC's target and channel options for `address` (one server, or several)."""
    options = [*options, *_RECONNECT_OPTIONS]
    if "," in address:
        return f"ipv4:{address}", [*options, ("grpc.service_config", _SEVERAL_SERVERS_CONFIG)]
    if address.startswith("dns:"):
        return address, [*options, ("grpc.service_config", _SEVERAL_SERVERS_CONFIG)]
    return address, options


def _secure(address: str, tls: TlsFiles, options: Options) -> grpc.Channel:
    target, secure_options = _secure_target(address, options)
    return grpc.secure_channel(target, channel_credentials(tls), options=secure_options)


def _secure_target(address: str, options: Options) -> tuple[str, list[tuple[str, Any]]]:
    target, secure_options = _target(address, options)
    if "," in address:
        # Every server of the list is checked against the first one's host (the same IP).
        host = address.split(",")[0].rpartition(":")[0]
        secure_options.append(("grpc.ssl_target_name_override", host))
    return target, secure_options

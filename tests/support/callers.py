"""Channels as the callers a security test plays: each role, nobody, and a forger."""

import grpc

from straightline_common.auth import Role


def caller_channel(channels, service, caller: str) -> grpc.Channel:
    """A channel to `service` as `caller`: a role, or nobody (no credentials), or a forger
    (a token of the right form that is not the deployment's)."""
    if caller == "nobody":
        return channels(service.address, role=None)
    if caller == "forger":
        return channels(service.address, token="x" * 43)
    return channels(service.address, Role(caller))

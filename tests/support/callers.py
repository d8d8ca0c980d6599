"""Channels as the callers a security test plays (each role, nobody, a forger), and the
attacks every adapter must refuse alike."""

import grpc

from straightline.v1 import inference_pb2, types_pb2
from straightline_common.auth import Role


def caller_channel(channels, service, caller: str) -> grpc.Channel:
    """A channel to `service` as `caller`: a role, or nobody (no credentials), or a forger
    (a token of the right form that is not the deployment's)."""
    if caller == "nobody":
        return channels(service.address, role=None)
    if caller == "forger":
        return channels(service.address, token="x" * 43)
    return channels(service.address, Role(caller))


# Model names that would leave the model store if they became paths, with the sentence the one
# validator answers (names.py).
ESCAPING_MODEL_NAMES = ("..", "../tiny", "/etc", "tiny/../tiny", "tiny?x=1", "tiny#1")


def assert_metadata_refuses_escaping_names(stub) -> None:
    """Every escaping name gets INVALID_ARGUMENT with the validator's sentence (not a file
    from outside the store), and the adapter still answers for a real model."""
    for name in ESCAPING_MODEL_NAMES:
        request = inference_pb2.GetModelMetadataRequest(model=types_pb2.ModelRef(name=name))
        try:
            stub.GetModelMetadata(request, timeout=30)
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, refused)
            assert f"model name {name!r} is not valid" in refused.details()
        else:
            raise AssertionError(f"metadata of the model {name!r} was answered")
    tiny = inference_pb2.GetModelMetadataRequest(model=types_pb2.ModelRef(name="tiny"))
    assert stub.GetModelMetadata(tiny, timeout=30).metadata.model.name == "tiny"

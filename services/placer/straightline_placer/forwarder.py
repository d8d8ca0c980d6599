"""Sends placed requests to adapter instances over gRPC, one reused channel per instance, and
checks that an advertised address is an adapter before anything is placed there."""

import threading
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from straightline.v1 import inference_pb2, inference_pb2_grpc, types_pb2
from straightline_common import errors
from straightline_common.auth import Role, Tokens
from straightline_common.channels import open_channel
from straightline_common.errors import ServiceError
from straightline_common.telemetry import metadata_with_context
from straightline_common.tls import TlsFiles
from straightline_placer.core import (
    AttemptTimedOut,
    PlatformExhausted,
    PlatformFailed,
    PlatformRefused,
)
from straightline_placer.registry import Instance

# How an attempt ended, by status code, when the request may go elsewhere: refused for want
# of capacity; refused otherwise (the model's files unusable there); or failed (unreachable,
# not an adapter we may call, an internal error, the connection lost, no answer within the
# attempt's time), which also ejects the instance for a while.
_REFUSALS = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: PlatformExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: PlatformRefused,
    **dict.fromkeys(
        (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.DATA_LOSS,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ),
        PlatformFailed,
    ),
}
_ERROR_OF_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
}


ADAPTER_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
_ADDRESS_CHECK_TIMEOUT_S = 3.0


class GrpcForwarder:
    def __init__(
        self, max_message_bytes: int, tokens: Tokens | None, tls: TlsFiles | None = None
    ) -> None:
        self._tokens = tokens
        self._tls = tls
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._stubs: dict[str, tuple[str, grpc.Channel, inference_pb2_grpc.InferenceServiceStub]]
        self._stubs = {}
        self._lock = threading.Lock()

    def forward(
        self, instance: Instance, payload: Any, timeout: float, request_id: str
    ) -> inference_pb2.PredictResponse:
        """`payload` is the placer's InferRequest; returns the adapter's PredictResponse."""
        request = inference_pb2.PredictRequest(
            request_id=request_id,
            model=payload.model,
            payload=payload.payload,
            content_type=payload.content_type,
            top_k=payload.top_k,
        )
        try:
            answer: inference_pb2.PredictResponse = self._stub(instance).Predict(
                request, timeout=timeout, metadata=metadata_with_context()
            )
            return answer
        except grpc.RpcError as error:
            raise _domain_error(instance, error, timeout) from None

    def metadata(
        self, instance: Instance, name: str, version: str, timeout: float
    ) -> inference_pb2.ModelMetadata:
        """The adapter's metadata of a model version."""
        request = inference_pb2.GetModelMetadataRequest(
            model=types_pb2.ModelRef(name=name, version=version)
        )
        try:
            answer: inference_pb2.GetModelMetadataResponse = self._stub(instance).GetModelMetadata(
                request, timeout=timeout, metadata=metadata_with_context()
            )
            return answer.metadata
        except grpc.RpcError as error:
            raise _domain_error(instance, error, timeout) from None

    def check_adapter(self, address: str) -> None:
        """Raises FailedPrecondition unless `address` answers the adapter's service as SERVING
        to a health check over the same credentials as forwarding."""
        channel = open_channel(address, Role.PLACER, self._options, self._tokens, self._tls)
        try:
            status = (
                health_pb2_grpc.HealthStub(channel)
                .Check(
                    health_pb2.HealthCheckRequest(service=ADAPTER_SERVICE),
                    timeout=_ADDRESS_CHECK_TIMEOUT_S,
                )
                .status
            )
        except grpc.RpcError as error:
            status = error.code().name
        else:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        finally:
            channel.close()
        if status != "SERVING":
            raise errors.FailedPrecondition(
                f"the advertised address {address} does not answer {ADAPTER_SERVICE} as SERVING "
                f"to the placer's health check ({status}); advertise the address the adapter "
                "listens on, reachable from the placer, and heartbeat once it serves"
            )

    def forget(self, instance_id: str) -> None:
        with self._lock:
            entry = self._stubs.pop(instance_id, None)
        if entry is not None:
            entry[1].close()

    def close(self) -> None:
        for instance_id in list(self._stubs):
            self.forget(instance_id)

    def _stub(self, instance: Instance) -> inference_pb2_grpc.InferenceServiceStub:
        with self._lock:
            entry = self._stubs.get(instance.instance_id)
            if entry is not None and entry[0] == instance.address:
                return entry[2]
            if entry is not None:
                entry[1].close()
            channel = open_channel(
                instance.address, Role.PLACER, self._options, self._tokens, self._tls
            )
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            self._stubs[instance.instance_id] = (instance.address, channel, stub)
            return stub


def _domain_error(instance: Instance, error: grpc.RpcError, timeout: float) -> ServiceError:
    code, details = error.code(), error.details()
    where = f"{instance.platform.name.lower()} instance {instance.instance_id}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AttemptTimedOut(f"{where} did not answer within the attempt's {timeout:.1f} s")
    if code in _REFUSALS:
        return _REFUSALS[code](f"{where} refused the request ({code.name}): {details}")
    error_class = _ERROR_OF_STATUS.get(code, errors.Internal)
    return error_class(f"{where}: {details}")

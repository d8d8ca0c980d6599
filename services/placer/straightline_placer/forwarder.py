"""Sends placed requests to adapter instances over gRPC, one reused asyncio channel per
instance (on the event loop of the placer's server: no thread waits on a request), and checks
that an advertised address is an adapter before anything is placed there."""

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from straightline.v1 import inference_pb2, inference_pb2_grpc, types_pb2
from straightline_common import errors
from straightline_common.auth import Role, Tokens
from straightline_common.channels import open_aio_channel, open_channel
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
        # Instance id -> (address, channel, the metadata its calls carry, stub); used and
        # changed on the event loop only.
        self._stubs: dict[str, _Stub] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Future[None]] = set()

    async def forward(
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
        _address, _channel, credentials, stub = self._stub(instance)
        try:
            answer: inference_pb2.PredictResponse = await stub.Predict(
                request, timeout=timeout, metadata=(*metadata_with_context(), *credentials)
            )
            return answer
        except grpc.RpcError as error:
            raise _domain_error(instance, error, timeout) from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller's own call was cancelled
            # gRPC cancels the calls of a channel it closes: the instance left the view.
            raise PlatformFailed(
                f"{instance.platform.name.lower()} instance {instance.instance_id} left the "
                "placer's view while the request was on its way"
            ) from None

    def metadata(
        self, instance: Instance, name: str, version: str, timeout: float
    ) -> inference_pb2.ModelMetadata:
        """The adapter's metadata of a model version (a blocking call, on a channel of its own:
        it is rare)."""
        request = inference_pb2.GetModelMetadataRequest(
            model=types_pb2.ModelRef(name=name, version=version)
        )
        channel = open_channel(
            instance.address, Role.PLACER, self._options, self._tokens, self._tls
        )
        try:
            answer: inference_pb2.GetModelMetadataResponse = (
                inference_pb2_grpc.InferenceServiceStub(channel).GetModelMetadata(
                    request, timeout=timeout, metadata=metadata_with_context()
                )
            )
            return answer.metadata
        except grpc.RpcError as error:
            raise _domain_error(instance, error, timeout) from None
        finally:
            channel.close()

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
        """Closes the instance's channel (from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._close(instance_id), loop)

    async def aclose(self) -> None:
        """Closes every channel; on the event loop, before it stops."""
        await asyncio.gather(*(self._close(instance_id) for instance_id in list(self._stubs)))

    async def _close(self, instance_id: str) -> None:
        entry = self._stubs.pop(instance_id, None)
        if entry is not None:
            await entry[1].close(None)

    def _stub(self, instance: Instance) -> "_Stub":
        entry = self._stubs.get(instance.instance_id)
        if entry is not None and entry[0] == instance.address:
            return entry
        if entry is not None:  # the instance moved: its old channel goes
            closing = asyncio.ensure_future(entry[1].close(None))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._loop = asyncio.get_running_loop()
        channel, credentials = open_aio_channel(
            instance.address, Role.PLACER, self._options, self._tokens, self._tls
        )
        entry = (
            instance.address,
            channel,
            credentials,
            inference_pb2_grpc.InferenceServiceStub(channel),
        )
        self._stubs[instance.instance_id] = entry
        return entry


_Stub = tuple[str, grpc.aio.Channel, tuple[tuple[str, str], ...], Any]


def _domain_error(instance: Instance, error: grpc.RpcError, timeout: float) -> ServiceError:
    code, details = error.code(), error.details()
    where = f"{instance.platform.name.lower()} instance {instance.instance_id}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return AttemptTimedOut(f"{where} did not answer within the attempt's {timeout:.1f} s")
    if code in _REFUSALS:
        return _REFUSALS[code](f"{where} refused the request ({code.name}): {details}")
    error_class = _ERROR_OF_STATUS.get(code, errors.Internal)
    return error_class(f"{where}: {details}")

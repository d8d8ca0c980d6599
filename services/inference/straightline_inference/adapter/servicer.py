"""The v1 InferenceService of an adapter, and the report it sends in its heartbeats."""

from typing import Any

from grpc import ServicerContext

from straightline.v1 import inference_pb2, inference_pb2_grpc, types_pb2
from straightline_common.auth import READERS, Role, access_of
from straightline_common.timeconv import duration
from straightline_inference.adapter.backend import PredictCall
from straightline_inference.adapter.core import Adapter

DEFAULT_TIMEOUT_S = 60.0
SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
# The placer forwards requests; clients and operators may call an adapter directly.
_CALLERS = READERS | {Role.PLACER}
ACCESS = access_of(
    SERVICE_NAME, {"Predict": _CALLERS, "GetModelMetadata": _CALLERS, "GetStatus": _CALLERS}
)


def _wire(kind: int) -> Any:
    """A backend's kind, a straightline.v1.Platform number."""
    return kind


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, adapter: Adapter, address: str) -> None:
        self._adapter = adapter
        self.address = address

    def Predict(
        self, request: inference_pb2.PredictRequest, context: ServicerContext
    ) -> inference_pb2.PredictResponse:
        timeout = context.time_remaining() or DEFAULT_TIMEOUT_S
        served = self._adapter.predict(
            PredictCall(
                request.request_id,
                request.model.name,
                request.model.version,
                request.payload,
                request.content_type,
                request.top_k,
            ),
            min(timeout, DEFAULT_TIMEOUT_S),
        )
        answer = served.answer
        return inference_pb2.PredictResponse(
            request_id=request.request_id,
            model=types_pb2.ModelRef(**answer.model),
            classes=[types_pb2.ClassScore(**c) for c in answer.classes],
            timings=types_pb2.PlatformTimings(
                queue=duration(answer.queue_seconds),
                cold_start=duration(answer.cold_start_seconds),
                execution=duration(answer.execution_seconds),
                total=duration(served.total_seconds),
                cold_start_paid=answer.cold_start_seconds > 0,
            ),
            platform=_wire(self._adapter.backend.kind),
            instance_id=self._adapter.instance_id,
        )

    def GetModelMetadata(
        self, request: inference_pb2.GetModelMetadataRequest, context: ServicerContext
    ) -> inference_pb2.GetModelMetadataResponse:
        metadata = self._adapter.backend.metadata(request.model.name, request.model.version)
        height, width = metadata["input_size"]
        return inference_pb2.GetModelMetadataResponse(
            metadata=inference_pb2.ModelMetadata(
                model=types_pb2.ModelRef(name=metadata["name"], version=metadata["version"]),
                class_names=metadata["class_names"],
                input_width=width,
                input_height=height,
                format=metadata.get("format", "keras-h5"),
                checksum=metadata.get("checksum", "").removeprefix("sha256:"),
            )
        )

    def GetStatus(
        self, request: inference_pb2.GetStatusRequest, context: ServicerContext
    ) -> inference_pb2.GetStatusResponse:
        return inference_pb2.GetStatusResponse(report=self.report())

    def report(self) -> types_pb2.InstanceReport:
        report = types_pb2.InstanceReport(
            instance_id=self._adapter.instance_id,
            platform=_wire(self._adapter.backend.kind),
            address=self.address,
            models=[
                types_pb2.ModelRef(name=n, version=v) for n, v in self._adapter.backend.models()
            ],
        )
        self._adapter.fill_report(report)
        return report

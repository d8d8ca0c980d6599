"""The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`) on the placer,
beside `PlacerService` on the same port, for the clients people already have (tritonclient,
KServe's, any generated from the contract).

Health and metadata come from the live view: a model is ready while a live instance serves
it; its metadata is its adapters'. `ModelInfer` places each image of the request by the
policy's rule exactly as `Infer` does (r_d: the image's bytes), sends them at once, and
answers in order; the placements go back in the response's parameters, one comma-separated
value per image. Tensors: `oip_tensors.py`."""

import asyncio
from typing import Any

import grpc
from grpc import ServicerContext

from inference import open_inference_grpc_pb2 as oip
from straightline.v1 import placer_pb2, types_pb2
from straightline_common import oip_tensors
from straightline_common.auth import READERS, access_of
from straightline_common.errors import NotFound
from straightline_common.names import check_id, check_model
from straightline_common.oip_service import SERVICE_NAME, LiveServicer
from straightline_common.telemetry import straightline_version
from straightline_placer.algorithm import platform_label
from straightline_placer.core import InferResult, Placer, Request

ACCESS = access_of(
    SERVICE_NAME,
    dict.fromkeys(
        (
            "ServerLive",
            "ServerReady",
            "ServerMetadata",
            "ModelReady",
            "ModelMetadata",
            "ModelInfer",
        ),
        READERS,
    ),
)
_METADATA_TIMEOUT_S = 5.0


class OipServicer(LiveServicer):
    def __init__(self, placer: Placer, default_timeout_s: float) -> None:
        self._placer = placer
        self._default_timeout_s = default_timeout_s

    def ServerReady(
        self, request: oip.ServerReadyRequest, context: ServicerContext
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=bool(self._placer.registry.live()))

    def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: ServicerContext
    ) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(
            name="straightline", version=straightline_version(), extensions=["classification"]
        )

    def ModelReady(
        self, request: oip.ModelReadyRequest, context: ServicerContext
    ) -> oip.ModelReadyResponse:
        name, version = check_model(request.name, request.version)
        return oip.ModelReadyResponse(ready=self._serves(name, version))

    def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: ServicerContext
    ) -> oip.ModelMetadataResponse:
        name, version = check_model(request.name, request.version)
        metadata = self._placer.model_metadata(name, version, _METADATA_TIMEOUT_S)
        height, width = metadata.input_height, metadata.input_width
        return oip.ModelMetadataResponse(
            name=metadata.model.name,
            versions=self._versions(name),
            platform="straightline",
            inputs=[
                oip.ModelMetadataResponse.TensorMetadata(name="image", datatype="BYTES", shape=[-1])
            ],
            outputs=[
                oip.ModelMetadataResponse.TensorMetadata(
                    name=oip_tensors.SCORES,
                    datatype="FP32",
                    shape=[-1, len(metadata.class_names)],
                )
            ],
            properties={
                "class_names": ",".join(metadata.class_names),
                "input_height": str(height),
                "input_width": str(width),
                "inputs": f"BYTES [N] (JPEG, PNG), or UINT8 or FP32 [N, H, W, 3] (RGB, 0-255), "
                f"resized to {height}x{width}",
            },
        )

    async def ModelInfer(
        self, request: oip.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> oip.ModelInferResponse:
        name, version = check_model(request.model_name, request.model_version)
        if request.id:
            check_id(request.id, "id")
        images = oip_tensors.images_of(request)
        wanted = oip_tensors.requested_outputs(request)
        timeout = context.time_remaining()
        if timeout is None or timeout > self._default_timeout_s:
            timeout = self._default_timeout_s
        ids = (
            [request.id]
            if len(images) == 1
            else [f"{request.id}-{i}" if request.id else "" for i in range(len(images))]
        )
        deadline = context.time_remaining()
        requests = [
            Request(request_id, name, version, len(image.payload), None, deadline)
            for image, request_id in zip(images, ids, strict=True)
        ]
        parts = [
            (placed, self._message(placed, image))
            for placed, image in zip(requests, images, strict=True)
        ]
        if len(parts) > 1 and self._placer.policy.keep_batches_together:
            batch = Request(
                request.id, name, version, sum(r.data_size_bytes for r in requests), None, deadline
            )
            results = await self._placer.infer_together(batch, parts, timeout)
        else:
            results = list(
                await asyncio.gather(*(self._placer.infer(*part, timeout) for part in parts))
            )
        response = oip.ModelInferResponse(
            model_name=name,
            model_version=results[0].answer.model.version,
            id=request.id,
        )
        oip_tensors.fill_outputs(response, wanted, [_scored(r) for r in results])
        _fill_placements(response.parameters, results)
        return response

    @staticmethod
    def _message(request: Request, image: oip_tensors.Image) -> placer_pb2.InferRequest:
        return placer_pb2.InferRequest(
            request_id=request.request_id,
            model=types_pb2.ModelRef(name=request.model_name, version=request.model_version),
            payload=image.payload,
            content_type=image.content_type,
            top_k=oip_tensors.ALL_CLASSES,
        )

    def _serves(self, name: str, version: str) -> bool:
        return any(instance.serves(name, version) for instance in self._placer.registry.live())

    def _versions(self, name: str) -> list[str]:
        versions: set[str] = set()
        for instance in self._placer.registry.live():
            versions |= instance.models.get(name, frozenset())
        versions.discard("")
        if not versions and not self._serves(name, ""):
            raise NotFound(f"no live instance serves model {name!r}")
        return sorted(versions, key=lambda v: (len(v), v))


def _scored(result: InferResult) -> oip_tensors.Scored:
    return oip_tensors.Scored([(c.label, c.index, c.score) for c in result.answer.classes])


def _fill_placements(parameters: Any, results: list[InferResult]) -> None:
    """Each image's placement, one value per image in order, comma-separated."""
    columns = {
        "straightline.request_id": [r.placement.request_id for r in results],
        "straightline.platform": [platform_label(r.placement.platform) for r in results],
        "straightline.branch": [r.placement.branch.name.lower() for r in results],
        "straightline.instance_id": [r.placement.instance_id for r in results],
        "straightline.served_platform": [platform_label(r.served_platform) for r in results],
        "straightline.served_instance_id": [r.served_instance_id for r in results],
        "straightline.fell_back": [str(r.fell_back).lower() for r in results],
        "straightline.f_t": [f"{r.placement.inputs.f_t:g}" for r in results],
        "straightline.r_d": [str(r.placement.inputs.r_d) for r in results],
        "straightline.total_ms": [f"{r.total_seconds * 1e3:.3f}" for r in results],
    }
    for key, values in columns.items():
        parameters[key].string_param = ",".join(values)

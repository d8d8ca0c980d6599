"""The Open Inference Protocol over gRPC on the model server (`--grpc-listen`): KServe v2's
`inference.GRPCInferenceService` beside the REST API, for the gRPC clients people already have
(tritonclient.grpc, KServe's). The same decode-and-predict path as REST's `/v2/.../infer`
(`oip_json.infer_message`); health and reflection as on every StraightLine gRPC server; callers
prove who they are as on the others (a client, operator or adapter certificate, or token)."""

from google.protobuf import json_format
from grpc import ServicerContext

from inference import open_inference_grpc_pb2 as oip
from straightline_common.auth import READERS, Role, access_of
from straightline_common.errors import NotFound
from straightline_common.names import check_model
from straightline_common.oip_service import SERVICE_NAME, LiveServicer
from straightline_inference import oip_json
from straightline_inference.model import ModelSet

METHODS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata")
ACCESS = access_of(SERVICE_NAME, dict.fromkeys((*METHODS, "ModelInfer"), READERS | {Role.ADAPTER}))


class ModelServerOip(LiveServicer):
    def __init__(self, models: ModelSet) -> None:
        self._models = models

    def ServerReady(
        self, request: oip.ServerReadyRequest, context: ServicerContext
    ) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=True)  # it serves once its models are loaded

    def ServerMetadata(
        self, request: oip.ServerMetadataRequest, context: ServicerContext
    ) -> oip.ServerMetadataResponse:
        metadata = oip_json.server_metadata()
        # Over gRPC, tensors travel as bytes anyway: the binary extension is REST's.
        extensions = [e for e in metadata["extensions"] if e != "binary_tensor_data"]
        return oip.ServerMetadataResponse(
            name=metadata["name"], version=metadata["version"], extensions=extensions
        )

    def ModelReady(
        self, request: oip.ModelReadyRequest, context: ServicerContext
    ) -> oip.ModelReadyResponse:
        name, version = check_model(request.name, request.version)
        try:
            self._models.get(name, version)
        except NotFound:
            return oip.ModelReadyResponse(ready=False)
        return oip.ModelReadyResponse(ready=True)

    def ModelMetadata(
        self, request: oip.ModelMetadataRequest, context: ServicerContext
    ) -> oip.ModelMetadataResponse:
        name, version = check_model(request.name, request.version)
        metadata = oip_json.metadata(self._models.get(name, version))
        return json_format.ParseDict(metadata, oip.ModelMetadataResponse())

    def ModelInfer(
        self, request: oip.ModelInferRequest, context: ServicerContext
    ) -> oip.ModelInferResponse:
        name, version = check_model(request.model_name, request.model_version)
        return oip_json.infer_message(self._models.get(name, version), request)

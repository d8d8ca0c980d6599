"""What every Open Inference Protocol gRPC servicer of StraightLine answers alike (the placer's
front door, the model server's `--grpc-listen`)."""

from grpc import ServicerContext

from inference import open_inference_grpc_pb2 as oip
from inference import open_inference_grpc_pb2_grpc as oip_grpc

SERVICE_NAME = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class LiveServicer(oip_grpc.GRPCInferenceServiceServicer):
    """`ServerLive`: true while the process answers at all."""

    def ServerLive(
        self, request: oip.ServerLiveRequest, context: ServicerContext
    ) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

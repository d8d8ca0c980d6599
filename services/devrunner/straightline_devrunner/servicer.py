"""The v1 DevRunnerService over the devrunner's core."""

from collections.abc import Iterator

from grpc import ServicerContext

from straightline.v1 import devrunner_pb2, devrunner_pb2_grpc
from straightline_common.auth import READERS, Role, access_of
from straightline_devrunner.core import DevRunner

SERVICE_NAME = devrunner_pb2.DESCRIPTOR.services_by_name["DevRunnerService"].full_name
_OPERATOR = frozenset({Role.OPERATOR})
ACCESS = access_of(
    SERVICE_NAME,
    {
        "SubmitJob": _OPERATOR,
        "CancelJob": _OPERATOR,
        "GetJob": READERS,
        "ListJobs": READERS,
        "WatchJob": READERS,
    },
)


class DevRunnerServicer(devrunner_pb2_grpc.DevRunnerServiceServicer):
    def __init__(self, devrunner: DevRunner) -> None:
        self._devrunner = devrunner

    def SubmitJob(
        self, request: devrunner_pb2.SubmitJobRequest, context: ServicerContext
    ) -> devrunner_pb2.SubmitJobResponse:
        return devrunner_pb2.SubmitJobResponse(job=self._devrunner.submit(request.spec))

    def GetJob(
        self, request: devrunner_pb2.GetJobRequest, context: ServicerContext
    ) -> devrunner_pb2.GetJobResponse:
        return devrunner_pb2.GetJobResponse(job=self._devrunner.get(request.job_id))

    def ListJobs(
        self, request: devrunner_pb2.ListJobsRequest, context: ServicerContext
    ) -> devrunner_pb2.ListJobsResponse:
        jobs, next_token = self._devrunner.list_jobs(
            request.page_size, request.page_token, request.kind, request.state
        )
        return devrunner_pb2.ListJobsResponse(jobs=jobs, next_page_token=next_token)

    def CancelJob(
        self, request: devrunner_pb2.CancelJobRequest, context: ServicerContext
    ) -> devrunner_pb2.CancelJobResponse:
        return devrunner_pb2.CancelJobResponse(job=self._devrunner.cancel(request.job_id))

    def WatchJob(
        self, request: devrunner_pb2.WatchJobRequest, context: ServicerContext
    ) -> Iterator[devrunner_pb2.WatchJobResponse]:
        yield from self._devrunner.watch(request.job_id, context.is_active)

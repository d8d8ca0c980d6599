"""A simulated adapter instance: the real v1 InferenceService and real heartbeats, with the
model replaced by a fixed service time. For the placer's tests, benchmark and demo.

It refuses payloads not declared as images.

It behaves like a platform with `capacity` slots, whose recent latency (reported once it has
served a request) is its service time: requests beyond them wait in a queue of
`queue_limit` places, beyond which it answers RESOURCE_EXHAUSTED. Its answer names the class
whose index is the payload's length modulo the number of classes, so callers can check that
the answer belongs to the request.
"""

import time
import uuid

from straightline.v1 import inference_pb2, inference_pb2_grpc, types_pb2
from straightline_common.errors import InvalidArgument, NotFound, ResourceExhausted
from straightline_common.grpcserver import GrpcServer
from straightline_common.timeconv import duration
from straightline_common.tls import tls_from_environ
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.platform import fill_capacity
from straightline_inference.adapter.servicer import ACCESS, SERVICE_NAME
from straightline_inference.heartbeat import Heartbeats
from straightline_inference.stats import RecentStats

CLASS_NAMES = ("cat", "chook", "dog", "horse")


class SimulatedAdapter(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        platform: int,
        placer_address: str,
        *,
        capacity: int = 2,
        queue_limit: int = 0,
        service_time_s: float = 0.01,
        models: tuple[str, ...] = ("demo",),
        instance_id: str | None = None,
        heartbeat_interval_s: float = 0.2,
    ):
        self.platform = platform
        self.instance_id = instance_id or f"sim-{uuid.uuid4().hex[:8]}"
        self.capacity = capacity
        self.queue_limit = queue_limit
        self.service_time_s = service_time_s
        self.models = models
        self.served = 0
        self.refused = 0
        self.last_time_remaining: float | None = None  # the deadline the last request came with
        self._gate = SlotGate(capacity, queue_limit, name=self.instance_id)
        self._stats = RecentStats()
        self._server = GrpcServer(
            "127.0.0.1:0",
            [
                lambda server: inference_pb2_grpc.add_InferenceServiceServicer_to_server(
                    self, server
                )
            ],
            [SERVICE_NAME],
            ACCESS,
            tls_files=tls_from_environ(),
            max_workers=capacity + queue_limit + 4,
        )
        self._heartbeats = Heartbeats(placer_address, self.report, interval_s=heartbeat_interval_s)

    @property
    def address(self) -> str:
        return self._server.address

    def start(self) -> "SimulatedAdapter":
        self._server.start()
        self._server.mark_serving()
        self._heartbeats.start()
        return self

    def stop(self) -> None:
        """A clean shutdown: says goodbye to the placer (which drops the instance at once),
        then stops serving."""
        self._heartbeats.stop()
        self._server.stop(0)

    def crash(self) -> None:
        """Stops answering and heartbeating at once, without saying goodbye."""
        self._heartbeats.abandon()
        self._server.stop(0)

    def silence(self) -> None:
        """Stops heartbeating (without ending the stream cleanly) but keeps serving."""
        self._heartbeats.abandon()

    def wait_registered(self, timeout: float = 5.0) -> bool:
        return self._heartbeats.wait_connected(timeout)

    def report(self) -> types_pb2.InstanceReport:
        report = types_pb2.InstanceReport(
            instance_id=self.instance_id,
            platform=self.platform,
            address=self.address,
            models=[types_pb2.ModelRef(name=name, version="1") for name in self.models],
        )
        fill_capacity(report, self._gate.capacity_report(warm=True))
        self._stats.fill(report)
        return report

    # InferenceService ----------------------------------------------------------------------

    def Predict(self, request, context):
        if request.model.name not in self.models:
            raise NotFound(f"model {request.model.name!r} is not served by {self.instance_id}")
        if not request.content_type.startswith("image/"):
            raise InvalidArgument(
                f"content type {request.content_type!r} is not an image; send image/jpeg or "
                "image/png"
            )
        self.last_time_remaining = context.time_remaining()
        arrived = time.perf_counter()
        try:
            with self._gate.slot(timeout=3600) as queued:
                time.sleep(self.service_time_s)
                self.served += 1
        except ResourceExhausted:
            self.refused += 1
            self._stats.record_failure()
            raise
        # Its service time is exactly the one it was given, so callers can rely on the figure.
        self._stats.record(
            len(request.payload), queued + self.service_time_s, queued, cold_start_s=0.0
        )
        index = len(request.payload) % len(CLASS_NAMES)
        return inference_pb2.PredictResponse(
            request_id=request.request_id,
            model=types_pb2.ModelRef(name=request.model.name, version="1"),
            classes=[types_pb2.ClassScore(label=CLASS_NAMES[index], index=index, score=1.0)],
            timings=types_pb2.PlatformTimings(
                queue=duration(queued),
                execution=duration(self.service_time_s),
                total=duration(time.perf_counter() - arrived),
            ),
            platform=self.platform,
            instance_id=self.instance_id,
        )

    def GetModelMetadata(self, request, context):
        if request.model.name not in self.models:
            raise NotFound(f"model {request.model.name!r} is not served by {self.instance_id}")
        return inference_pb2.GetModelMetadataResponse(
            metadata=inference_pb2.ModelMetadata(
                model=types_pb2.ModelRef(name=request.model.name, version="1"),
                class_names=CLASS_NAMES,
                input_width=71,
                input_height=71,
                format="simulated",
            )
        )

    def GetStatus(self, request, context):
        return inference_pb2.GetStatusResponse(report=self.report())

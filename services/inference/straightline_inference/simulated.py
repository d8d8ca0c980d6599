"""A simulated platform: a backend whose model is a fixed service time, behind the real adapter
core, servicer, gRPC server and heartbeats. For the placer's tests, benchmark and demo.

It behaves like a platform with `capacity` slots: requests beyond them wait in a queue of
`queue_limit` places, beyond which it answers RESOURCE_EXHAUSTED. It refuses payloads not
declared as images. Its answer gives the class whose index is the payload's length modulo the
number of classes a score of 1 (the others 0, after it, up to top_k), so callers can check
that the answer belongs to the request.
"""

import time
import uuid
from collections.abc import Iterable
from typing import Any

from straightline.v1 import inference_pb2_grpc, types_pb2
from straightline_common import tensors
from straightline_common.errors import InvalidArgument, NotFound, ResourceExhausted
from straightline_common.grpcserver import GrpcServer
from straightline_common.tls import tls_from_environ
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall
from straightline_inference.adapter.core import Adapter
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.metrics import AdapterMetrics
from straightline_inference.adapter.servicer import ACCESS, SERVICE_NAME, InferenceServicer
from straightline_inference.batching import BatchCeiling
from straightline_inference.heartbeat import Heartbeats

CLASS_NAMES = ("cat", "chook", "dog", "horse")


class SimulatedBackend:
    """Counts what it serves and refuses, and the timeout the last request came with."""

    def __init__(
        self,
        kind: int,
        *,
        capacity: int,
        queue_limit: int,
        service_time_s: float,
        models: Iterable[str],
        name: str,
    ) -> None:
        self.kind = kind
        self.service_time_s = service_time_s
        self.served = 0
        self.refused = 0
        self.last_timeout_s: float | None = None
        self.last_batching: BatchCeiling | None = None
        self._models = tuple(models)
        self._gate = SlotGate(capacity, queue_limit, name=name)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def capacity(self) -> Capacity:
        return self._gate.capacity_report(warm=True)

    def models(self) -> list[tuple[str, str]]:
        return [(name, "1") for name in self._models]

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        self._check_served(name)
        return {
            "name": name,
            "version": "1",
            "class_names": list(CLASS_NAMES),
            "input_size": [71, 71],
            "format": "simulated",
        }

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        self._check_served(call.model_name)
        if not call.content_type.startswith(("image/", tensors.MEDIA_TYPE)):
            raise InvalidArgument(
                f"content type {call.content_type!r} is not an image; send image/jpeg, "
                f"image/png or {tensors.MEDIA_TYPE}"
            )
        self.last_timeout_s = timeout
        self.last_batching = call.batching
        try:
            with self._gate.slot(timeout=3600) as queued:
                time.sleep(self.service_time_s)
                self.served += 1
        except ResourceExhausted:
            self.refused += 1
            raise
        index = len(call.payload) % len(CLASS_NAMES)
        ranked = [index, *(i for i in range(len(CLASS_NAMES)) if i != index)]
        return Answer(
            {"name": call.model_name, "version": "1"},
            [
                {"label": CLASS_NAMES[i], "index": i, "score": 1.0 if i == index else 0.0}
                for i in ranked[: call.top_k or 1]
            ],
            queue_seconds=queued,
            execution_seconds=self.service_time_s,
        )

    def _check_served(self, name: str) -> None:
        if name not in self._models:
            raise NotFound(f"model {name!r} is not served by this simulated platform")


class SimulatedAdapter:
    """An adapter instance of a simulated platform, serving on a loopback port and reporting to
    the placer."""

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
    ) -> None:
        self.platform = platform
        self.instance_id = instance_id or f"sim-{uuid.uuid4().hex[:8]}"
        self.backend = SimulatedBackend(
            platform,
            capacity=capacity,
            queue_limit=queue_limit,
            service_time_s=service_time_s,
            models=models,
            name=self.instance_id,
        )
        adapter = Adapter(
            self.backend, self.instance_id, AdapterMetrics(types_pb2.Platform.Name(platform))
        )
        self._servicer = InferenceServicer(adapter, address="")
        self._server = GrpcServer(
            "127.0.0.1:0",
            [
                lambda server: inference_pb2_grpc.add_InferenceServiceServicer_to_server(
                    self._servicer, server
                )
            ],
            [SERVICE_NAME],
            ACCESS,
            tls_files=tls_from_environ(),
            max_workers=capacity + queue_limit + 4,
        )
        self._heartbeats = Heartbeats(
            placer_address,
            self._servicer.report,
            interval_s=heartbeat_interval_s,
            on_batching=adapter.take_batching,
        )

    @property
    def address(self) -> str:
        return self._server.address

    @property
    def served(self) -> int:
        return self.backend.served

    @property
    def refused(self) -> int:
        return self.backend.refused

    @property
    def last_batching(self) -> BatchCeiling | None:
        """The batching ceilings the last request carried for the model server."""
        return self.backend.last_batching

    @property
    def last_time_remaining(self) -> float | None:
        """The deadline the last request came with (as the servicer passed it on)."""
        return self.backend.last_timeout_s

    def start(self) -> "SimulatedAdapter":
        self._server.start()
        self._servicer.address = self._server.address
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
        return self._servicer.report()

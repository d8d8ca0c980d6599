"""An OTLP/gRPC trace receiver for tests: what a collector or Jaeger would receive."""

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict
    status_code: int
    events: tuple = ()  # (name, attributes) per event
    pid: int = 0  # the process.pid of the span's resource


def _value(any_value):
    field = any_value.WhichOneof("value")
    return getattr(any_value, field) if field else None


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "OtlpReceiver":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0)

    def Export(self, request, context):
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            status_code=span.status.code,
                            events=tuple(
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in span.events
                            ),
                            pid=resource.get("process.pid", 0),
                        )
                    )
        with self._changed:
            self.spans.extend(received)
            self._changed.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, predicate, timeout: float = 10.0, count: int = 1) -> list[ReceivedSpan]:
        """Waits until `count` received spans satisfy `predicate`; returns those that do."""
        with self._changed:
            self._changed.wait_for(
                lambda: len([s for s in self.spans if predicate(s)]) >= count, timeout
            )
            return [s for s in self.spans if predicate(s)]


def assert_job_trace(otlp_receiver, trace_id, phases, epochs=0) -> ReceivedSpan:
    """A devrunner job's trace: one devrunner.job span with an event per epoch, and the
    trainer's phases as its children (the trainer got the context through TRACEPARENT and
    reported the phases' times)."""
    assert len(trace_id) == 32
    [job_span] = otlp_receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.name == "devrunner.job", timeout=30
    )
    epoch_events = [attributes for name, attributes in job_span.events if name == "epoch"]
    assert [e["epoch"] for e in epoch_events] == list(range(1, epochs + 1))
    names = {f"trainer.{phase}" for phase in phases}
    children = otlp_receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.name in names, count=len(names), timeout=30
    )
    assert {s.name for s in children} == names
    assert {s.parent_span_id for s in children} == {job_span.span_id}
    assert {s.service for s in children} == {"straightline-devrunner"}
    return job_span

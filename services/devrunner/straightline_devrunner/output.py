"""A job's output as the trainer writes it, one line at a time, into the job's record: JSON
lines are the trainer's events (epochs, progress, timed phases, the result), any other line a
log line, the last of which are kept for the message of a failure."""

import json
from typing import Any

from opentelemetry import trace

from straightline.v1 import devrunner_pb2, types_pb2
from straightline_common.timeconv import duration
from straightline_devrunner.jobs import JobStore

tracer = trace.get_tracer("straightline.devrunner")
LAST_LOG_LINES = 20


class TrainerOutput:
    def __init__(self, jobs: JobStore, job_id: str, span: trace.Span) -> None:
        self._jobs = jobs
        self._job_id = job_id
        self._span = span
        self._last_lines: list[str] = []

    @property
    def tail(self) -> str:
        """The job's last log lines."""
        return "\n".join(self._last_lines)

    def on_line(self, stream: str, text: str) -> None:
        try:
            event = json.loads(text) if text.startswith("{") else None
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self._log(stream, text)
            return
        kind = event.pop("event", None)
        if kind == "epoch":
            self._record_epoch(event)
        elif kind == "phase":
            _record_phase(self._span, event)
        elif kind == "progress":
            self._jobs.append(self._job_id, progress=devrunner_pb2.StepProgress(**event))
        elif kind == "result":
            self._record_result(event)
        elif kind != "start":
            self._log(stream, text)

    def _log(self, stream: str, text: str) -> None:
        self._last_lines.append(text)
        del self._last_lines[:-LAST_LOG_LINES]
        self._jobs.append(self._job_id, log=devrunner_pb2.LogLine(stream=stream, text=text))

    def _record_epoch(self, event: dict[str, Any]) -> None:
        epoch = devrunner_pb2.EpochMetrics(elapsed=duration(event.pop("elapsed_s", 0.0)), **event)
        job = self._jobs.get(self._job_id)
        job.epochs.append(epoch)
        self._jobs.save(job)
        self._span.add_event(
            "epoch", {k: v for k, v in event.items() if isinstance(v, int | float)}
        )
        self._jobs.append(self._job_id, epoch=epoch)

    def _record_result(self, result: dict[str, Any]) -> None:
        job = self._jobs.get(self._job_id)
        job.model.CopyFrom(types_pb2.ModelRef(**result["model"]))
        for key in ("accuracy", "loss"):
            if key in result:
                job.results[key] = result[key]
        for key, value in result.get("metrics", {}).items():
            job.results[key] = value
        if "passed" in result:
            job.passed = result["passed"]
        self._jobs.save(job)


def _record_phase(job_span: trace.Span, event: dict[str, Any]) -> None:
    """A phase the trainer timed, as a child span of the job with the trainer's own times."""
    name = event.pop("name", "phase")
    start, end = event.pop("start_s", None), event.pop("end_s", None)
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return
    span = tracer.start_span(
        f"trainer.{name}",
        context=trace.set_span_in_context(job_span),
        start_time=int(start * 1e9),
        attributes={f"straightline.{k}": v for k, v in event.items() if isinstance(v, int)},
    )
    span.end(end_time=int(end * 1e9))

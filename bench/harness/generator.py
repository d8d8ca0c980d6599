"""The open-loop load generator: every request leaves at its scheduled time, whatever the
answers do (a slow server must not slow the generator, or the figures hide the queueing).

Sending never blocks the schedule: gRPC calls are futures (`Infer.future`), HTTP calls go to a
large thread pool. Each answer becomes a Record in its done-callback.
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import urllib3

from scripts.localstack import PLATFORM_NAMES
from straightline.v1 import placer_pb2, types_pb2
from straightline_common.timeconv import seconds


@dataclass
class Record:
    index: int
    phase: int
    image: str
    bytes: int
    scheduled_s: float
    sent_s: float = 0.0
    done_s: float = 0.0
    status: str = ""
    platform: str = ""
    branch: str = ""
    fell_back: bool = False
    cold_start_ms: float = 0.0
    # The time the platform was busy with the request (execution and cold start; waiting in
    # its queue excluded): its cost is reckoned from it. Under a rule that predicts, the
    # latency predicted on the platform that served it (0: none).
    platform_ms: float = 0.0
    predicted_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @property
    def response_ms(self) -> float:
        """From the moment the request left to its answer."""
        return (self.done_s - self.sent_s) * 1e3

    @property
    def session_ms(self) -> float:
        """From the scheduled start of the session (one request) to its answer."""
        return (self.done_s - self.scheduled_s) * 1e3


class PlacerTarget:
    """Infer on the placer, recording where each request went."""

    def __init__(self, stub, model: str, timeout_s: float):
        self._infer = stub.Infer
        self._model = types_pb2.ModelRef(name=model)
        self._timeout = timeout_s

    def send(self, record: Record, payload: bytes, content_type: str, done, clock) -> None:
        request = placer_pb2.InferRequest(
            model=self._model, payload=payload, content_type=content_type, top_k=1
        )
        call = self._infer.future(request, timeout=self._timeout)
        call.add_done_callback(lambda f: done(record, _placer_outcome(record, f)))

    def close(self) -> None:
        pass


def _placer_outcome(record: Record, call) -> Record:
    try:
        answer = call.result()
    except grpc.RpcError as error:
        record.status = error.code().name
        return record
    record.status = "OK"
    record.platform = PLATFORM_NAMES[answer.served_platform]
    record.branch = types_pb2.Branch.Name(answer.placement.branch).removeprefix("BRANCH_")
    record.fell_back = answer.fell_back
    record.cold_start_ms = seconds(answer.platform_timings.cold_start) * 1e3
    timings = answer.platform_timings
    record.platform_ms = (seconds(timings.execution) + seconds(timings.cold_start)) * 1e3
    record.predicted_ms = next(
        (
            seconds(state.predicted_latency) * 1e3
            for state in answer.placement.inputs.platforms
            if state.platform == answer.served_platform and state.HasField("predicted_latency")
        ),
        0.0,
    )
    return record


class RestTarget:
    """POST to a model server's REST route (what Artillery drives in the cross-check)."""

    def __init__(self, url: str, timeout_s: float, workers: int = 512):
        self._url = url
        self._http = urllib3.PoolManager(maxsize=workers, timeout=timeout_s, retries=False)
        self._pool = ThreadPoolExecutor(workers)
        self.server_ms: list[float] = []  # the server's own time, from each answer's timings

    def send(self, record: Record, payload: bytes, content_type: str, done, clock) -> None:
        def post():
            record.sent_s = clock()  # when a worker thread sends it, not when it was queued
            try:
                response = self._http.request(
                    "POST", self._url, body=payload, headers={"Content-Type": content_type}
                )
                record.status = "OK" if response.status == 200 else f"HTTP_{response.status}"
            except urllib3.exceptions.HTTPError as error:
                record.status = type(error).__name__
            record.platform = "rest"
            done(record, record)
            if record.ok:  # after done(): not in the measured time
                self.server_ms.append(json.loads(response.data)["timings"]["total_ms"])

        self._pool.submit(post)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.clear()


def run(target, arrivals, payloads, timeout_s: float) -> list[Record]:
    """Sends request i at arrivals[i] with payloads[i] = (name, bytes, content type); returns
    the records once every request has an answer or has timed out."""
    records: list[Record] = []
    lock = threading.Lock()
    all_done = threading.Event()
    expected = len(arrivals)

    def clock() -> float:
        return time.monotonic() - start

    def done(record: Record, outcome: Record) -> None:
        outcome.done_s = clock()
        with lock:
            records.append(outcome)
            if len(records) == expected:
                all_done.set()

    start = time.monotonic()
    for index, ((at, phase), (name, payload, content_type)) in enumerate(
        zip(arrivals, payloads, strict=True)
    ):
        delay = at - (time.monotonic() - start)
        if delay > 0:
            time.sleep(delay)
        record = Record(index, phase, name, len(payload), scheduled_s=at)
        record.sent_s = clock()
        target.send(record, payload, content_type, done, clock)
    if expected and not all_done.wait(timeout_s + 30):
        raise RuntimeError(f"{expected - len(records)} requests never finished")
    return sorted(records, key=lambda r: r.index)

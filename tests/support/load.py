"""An open loop of real Infer calls through a placer, as a fault test drives one: requests at a
fixed rate whatever the answers, and what each got."""

import threading
import time
from dataclasses import dataclass

import grpc

from straightline.v1 import placer_pb2, types_pb2


@dataclass(frozen=True)
class Outcome:
    sent: float  # time.monotonic() when it was sent
    done: float  # time.monotonic() when its answer or error came
    code: grpc.StatusCode
    answer: placer_pb2.InferResponse | None  # None when it failed
    details: str = ""  # why it failed


class OpenLoop:
    """Infer calls at `rate_per_s` on one stub until stopped, each with its own deadline."""

    def __init__(
        self,
        stub,
        rate_per_s: float = 40,
        request: placer_pb2.InferRequest | None = None,
        timeout_s: float = 10,
    ):
        self._stub = stub
        self._period = 1 / rate_per_s
        self._request = request or placer_pb2.InferRequest(
            model=types_pb2.ModelRef(name="demo"), payload=b"x" * 100, content_type="image/png"
        )
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self.outcomes: list[Outcome] = []
        self._calls: list[tuple[float, grpc.Future]] = []
        self._done: dict[int, float] = {}  # id of a call -> when it ended
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "OpenLoop":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()
        for sent, call in self._calls:
            error = call.exception()
            done = self._done[id(call)]
            if error is None:
                self.outcomes.append(Outcome(sent, done, grpc.StatusCode.OK, call.result()))
            else:
                self.outcomes.append(Outcome(sent, done, error.code(), None, error.details()))

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            sent = time.monotonic()
            call = self._stub.Infer.future(self._request, timeout=self._timeout_s)
            call.add_done_callback(lambda ended: self._done.setdefault(id(ended), time.monotonic()))
            self._calls.append((sent, call))

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.code != grpc.StatusCode.OK]

    def served(self) -> list[placer_pb2.InferResponse]:
        return [o.answer for o in self.outcomes if o.answer is not None]

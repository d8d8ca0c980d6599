"""The Lambda service: functions, their execution environments, and the Invoke API over HTTP.

An environment runs one invocation at a time. An invocation takes a warm idle environment of
its function if there is one, else starts a new one (a cold start) unless the account's
concurrency is used up, in which case AWS answers 429 TooManyRequestsException. Environments
idle longer than the reap time are removed. Time passes in sleeps: an invocation costs a
thread that waits, not the CPU.
"""

import base64
import binascii
import hashlib
import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.lambda_service.calibration import Calibration

# Lambda's limits for a synchronous invocation: 6 MB each way; account concurrency 1,000.
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
DEFAULT_CONCURRENCY = 1000
_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/([A-Za-z0-9_-]{1,64})/invocations$")


@dataclass
class Function:
    name: str
    calibration: Calibration
    # sha256 of an image -> the model's answer for it, as the Lambda handler returns it.
    answers: dict[str, dict]
    idle: list[float] = field(default_factory=list)  # when each idle environment last ran
    busy: int = 0


@dataclass(frozen=True)
class Outcome:
    status: int
    body: bytes
    headers: dict[str, str]


class LambdaService:
    def __init__(
        self,
        functions: list[Function],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        reap_after_s: float = 600.0,
        seed: int = 1,
        sleep=time.sleep,
        clock=time.monotonic,
    ):
        self.functions = {f.name: f for f in functions}
        self.concurrency = concurrency
        self.reap_after_s = reap_after_s
        self._rng = random.Random(seed)
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self.invocations = self.throttled = self.cold_starts = 0

    def invoke(self, name: str, payload: bytes) -> Outcome:
        function = self.functions.get(name)
        if function is None:
            return _error(404, "ResourceNotFoundException", f"Function not found: {name}")
        if len(payload) > PAYLOAD_LIMIT_BYTES:
            return _error(
                413,
                "RequestEntityTooLargeException",
                f"Request must be smaller than {PAYLOAD_LIMIT_BYTES} bytes for the "
                "InvokeFunction operation",
            )
        with self._lock:
            cold = self._take_environment(function)
            if cold is None:
                self.throttled += 1
                return _error(
                    429,
                    "TooManyRequestsException",
                    "Rate Exceeded.",
                    reason="ReservedFunctionConcurrentInvocationLimitExceeded",
                )
            self.invocations += 1
            self.cold_starts += cold
            calibration = function.calibration
            init = calibration.cold_start_s(self._rng) if cold else 0.0
            service = calibration.service_s(self._rng)
            round_trip = calibration.round_trip(self._rng)
        try:
            self._sleep(round_trip + init + service)
            body = _answer(function, payload, service)
        finally:
            with self._lock:
                function.busy -= 1
                function.idle.append(self._clock())
        return Outcome(
            200,
            json.dumps(body).encode(),
            {
                "X-Amz-Executed-Version": "$LATEST",
                "X-Amz-Log-Result": _report(service, init, calibration.memory_mb),
                **({"X-Amz-Function-Error": "Unhandled"} if "errorType" in body else {}),
            },
        )

    def environments(self, name: str) -> tuple[int, int]:
        """(busy, idle) environments of a function, after reaping."""
        with self._lock:
            function = self.functions[name]
            self._reap(function)
            return function.busy, len(function.idle)

    def _take_environment(self, function: Function) -> bool | None:
        """True: a new environment (cold); False: a warm one; None: throttled."""
        self._reap(function)
        if function.idle:
            function.idle.pop()  # the most recently used, as Lambda tends to
            function.busy += 1
            return False
        running = sum(f.busy + len(f.idle) for f in self.functions.values())
        if running >= self.concurrency:
            idle_elsewhere = [f for f in self.functions.values() if f.idle]
            if not idle_elsewhere:
                return None
            idle_elsewhere[0].idle.pop(0)  # the account's limit frees an idle environment
        function.busy += 1
        return True

    def _reap(self, function: Function) -> None:
        horizon = self._clock() - self.reap_after_s
        function.idle = [last for last in function.idle if last >= horizon]


def _answer(function: Function, payload: bytes, service: float) -> dict:
    try:
        event = json.loads(payload)
        image = base64.b64decode(event["payload_b64"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return {"errorType": "InvalidEvent", "errorMessage": "the event holds no payload_b64"}
    answer = function.answers.get(hashlib.sha256(image).hexdigest())
    if answer is None:
        return {
            "errorType": "UnknownImage",
            "errorMessage": "this image is not among the precomputed answers of the emulator",
        }
    top_k = int(event.get("top_k") or 0)
    classes = answer["classes"][:top_k] if top_k else answer["classes"]
    milliseconds = service * 1e3
    return {
        "model": answer["model"],
        "classes": classes,
        "timings": {"decode_ms": 0.0, "inference_ms": milliseconds, "total_ms": milliseconds},
    }


def _report(service: float, init: float, memory_mb: int) -> str:
    """The REPORT line that `LogType=Tail` returns, base64-encoded, as AWS writes it."""
    billed = max(1, round((service + init) * 1e3 + 0.5))
    line = (
        f"REPORT RequestId: {uuid.uuid4()}\tDuration: {service * 1e3:.2f} ms\t"
        f"Billed Duration: {billed} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: "
        f"{memory_mb // 2} MB\t" + (f"Init Duration: {init * 1e3:.2f} ms\t" if init else "")
    )
    return base64.b64encode(line.encode()).decode()


def _error(status: int, error_type: str, message: str, reason: str = "") -> Outcome:
    body = {"Type": "User", "message": message, **({"Reason": reason} if reason else {})}
    return Outcome(status, json.dumps(body).encode(), {"x-amzn-ErrorType": error_type})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service: LambdaService

    def do_POST(self):
        match = _INVOKE_PATH.match(self.path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        if length > PAYLOAD_LIMIT_BYTES + 1024:
            self._send(_error(413, "RequestEntityTooLargeException", "Request too large"))
            self.close_connection = True
            return
        payload = self.rfile.read(length)
        if match is None:
            self._send(_error(404, "UnknownOperationException", "Unknown operation"))
            return
        self._send(self.service.invoke(match.group(1), payload))

    def _send(self, outcome: Outcome) -> None:
        self.send_response(outcome.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(outcome.body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(outcome.body)

    def log_message(self, format, *args):
        pass


def serve(service: LambdaService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server for the service (a thread per connection); call serve_forever()."""
    handler = type("Handler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server

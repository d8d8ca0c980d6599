"""Serverless: boto3 `lambda.invoke` (RequestResponse), against AWS Lambda when a function is
configured, else against local execution environments of the Lambda image under AWS's
Runtime Interface Emulator: containers when an engine is reachable, local processes
otherwise. Each environment runs one invocation at a time; they start on demand up to the
concurrency limit and are reaped when idle; beyond the limit a request is throttled, as
Lambda answers 429.

Batching (opt-in, `Batching`): requests that arrive within a delay of each other go in one
invocation, `{"batch": [event, ...]}`, and the answers are split. It changes what Lambda
bills and how it fails: one invocation (one request charge, its GB-seconds for the whole
batch) per group, and a function error, a timeout or a throttle fails every request of the
group; an input error fails only its own request. An environment then holds up to a batch of
requests, and the adapter reports as many slots."""

import base64
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from opentelemetry import propagate

from straightline.v1 import types_pb2
from straightline_common.errors import (
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    from_code_name,
)
from straightline_common.modelstore import ModelStore
from straightline_common.processes import dying_with_parent
from straightline_inference.adapter import containers
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall, ServesStore
from straightline_inference.adapter.coalescer import NO_BATCHING, Batching
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.pooled_backend import PooledBackend, PoolSettings
from straightline_inference.rie import ensure_rie

Json = dict[str, Any]
# How to stop an environment, and how to ask what is wrong with it (None: nothing).
StopAndProbe = tuple[Callable[[], None], Callable[[], str | None]]

log = logging.getLogger(__name__)

# Lambda's limit on a synchronous invocation's request payload (the JSON event).
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
HANDLER = "straightline_inference.lambda_handler.handler"
_INVOKE_TIMEOUT_S = 120


class LambdaFunction:
    """One function to invoke: an AWS function, or one local emulator endpoint. With
    `tail_logs`, each invocation asks for its REPORT line (LogType=Tail), from which
    `invoke_timed` reads the cold start AWS paid for it (0 when the environment was warm)."""

    def __init__(self, client: Any, function_name: str, *, tail_logs: bool = False) -> None:
        self._client = client
        self._function_name = function_name
        self._options = {"LogType": "Tail"} if tail_logs else {}

    def invoke(self, event: Json, *, with_trace: bool = True) -> Json:
        return self.invoke_timed(event, with_trace=with_trace)[0]

    def invoke_timed(self, event: Json, *, with_trace: bool = True) -> tuple[Json, float]:
        """The handler's answer and the cold start the invocation paid, in seconds."""
        payload = json.dumps(event).encode()
        if len(payload) > PAYLOAD_LIMIT_BYTES:
            raise InvalidArgument(
                f"the request is {len(payload)} bytes once encoded for Lambda, over its "
                f"{PAYLOAD_LIMIT_BYTES}-byte limit for synchronous invocations; send a smaller "
                "image or use another platform"
            )
        options = {"ClientContext": _client_context()} if with_trace else {}
        options.update(self._options)
        try:
            response = self._client.invoke(
                FunctionName=self._function_name,
                InvocationType="RequestResponse",
                Payload=payload,
                **options,
            )
        except botocore.exceptions.ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("TooManyRequestsException", "ThrottlingException"):
                raise ResourceExhausted(f"Lambda throttled the request: {error}") from None
            raise Unavailable(f"Lambda refused the invocation ({code}): {error}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise Unavailable(f"Lambda cannot be reached: {error}") from None
        body = json.loads(response["Payload"].read() or b"null")
        if response.get("FunctionError") or (
            isinstance(body, dict) and "errorType" in body and "errorMessage" in body
        ):
            raise Internal(
                f"the Lambda handler failed: {body.get('errorType')}: {body.get('errorMessage')}"
            )
        if "error" in body:
            raise from_code_name(body["error"].get("code", ""), body["error"].get("message", ""))
        return body, init_seconds(response.get("LogResult", ""))


_INIT_DURATION = re.compile(r"Init Duration: ([0-9.]+) ms")


def init_seconds(log_result: str) -> float:
    """The cold start of an invocation from its base64 REPORT line (0 without one)."""
    try:
        match = _INIT_DURATION.search(base64.b64decode(log_result).decode(errors="replace"))
    except ValueError:
        return 0.0
    return float(match.group(1)) / 1e3 if match else 0.0


def _client_context() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return base64.b64encode(json.dumps({"custom": carrier}).encode()).decode()


def _event(call: PredictCall) -> Json:
    return {
        "request_id": call.request_id,
        "model": {"name": call.model_name, "version": call.model_version},
        "payload_b64": base64.b64encode(call.payload).decode(),
        "content_type": call.content_type,
        "top_k": call.top_k,
    }


def _answer(body: Json, **timings: float) -> Answer:
    return Answer(body["model"], body["classes"], **timings)


# The base64 image and the event's other fields, as JSON: a batch stays under Lambda's limit.
_BATCH_BYTES = PAYLOAD_LIMIT_BYTES - 64 * 1024


def _event_bytes(call: PredictCall) -> int:
    return (len(call.payload) + 2) // 3 * 4 + 512


def _invocation(calls: list[PredictCall], batching: Batching) -> Json:
    """The event for these calls: one request's, or a batch's."""
    if not batching.on:
        [call] = calls
        return _event(call)
    return {"batch": [_event(call) for call in calls]}


def _answers(body: Json, batching: Batching, **timings: float) -> list[Answer | Exception]:
    """Each call's answer, or its own error, from the handler's answer."""
    if not batching.on:
        return [_answer(body, **timings)]
    return [
        from_code_name(item["error"].get("code", ""), item["error"].get("message", ""))
        if "error" in item
        else _answer(item, **timings)
        for item in body["batch"]
    ]


def _one(answers: list[Answer | Exception]) -> Answer:
    [answer] = answers
    if isinstance(answer, Exception):
        raise answer
    return answer


def _lambda_client(
    endpoint_url: str | None, max_pool_connections: int = 10, **credentials: str
) -> Any:
    config = botocore.config.Config(
        read_timeout=_INVOKE_TIMEOUT_S,
        connect_timeout=5,
        retries={"max_attempts": 0},
        max_pool_connections=max_pool_connections,
    )
    return boto3.client("lambda", endpoint_url=endpoint_url, config=config, **credentials)


class AwsServerless(ServesStore):
    """A function deployed on AWS Lambda (or any endpoint speaking its API)."""

    kind = types_pb2.PLATFORM_SERVERLESS

    def __init__(
        self,
        *,
        function_name: str,
        store: str,
        concurrency: int,
        endpoint_url: str | None = None,
        batching: Batching = NO_BATCHING,
    ) -> None:
        self._function = LambdaFunction(
            _lambda_client(endpoint_url, max_pool_connections=concurrency),
            function_name,
            tail_logs=True,
        )
        self._store = ModelStore(store)
        self._gate = SlotGate(concurrency, 0, name=f"Lambda function {function_name}")
        self._warm = WarmEstimate(AWS_WARM_WINDOW_S)
        self._batching = batching
        self._groups = batching.coalescer(self._invoke, _event_bytes, _BATCH_BYTES)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def capacity(self) -> Capacity:
        capacity = self._gate.capacity_report(warm=True)
        warm = min(capacity.total, self._warm.environments())
        return self._batching.slots(
            dataclasses.replace(capacity, warm_environments=warm, warm_slots=warm)
        )

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        if self._groups is not None:
            return self._groups.call(call)
        return _one(self._invoke([call]))

    def _invoke(self, calls: list[PredictCall]) -> list[Answer | Exception]:
        started = time.perf_counter()
        with self._gate.slot(0):
            running = self._gate.in_flight
            body, cold = self._function.invoke_timed(_invocation(calls, self._batching))
            self._warm.running(running)
        total = time.perf_counter() - started
        return _answers(
            body, self._batching, cold_start_seconds=cold, execution_seconds=total - cold
        )


# AWS keeps an idle environment for minutes (not documented; 5-15 min is what is reported):
# as many environments as ran at once within this window are taken as warm.
AWS_WARM_WINDOW_S = 300.0


class WarmEstimate:
    """How many environments AWS keeps warm for the function: the most that ran at once in
    the last `window_s` (AWS does not say; cold starts show in the REPORT lines)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s, self._clock = window_s, clock
        self._peaks: list[tuple[float, int]] = []  # (when, running), running decreasing
        self._lock = threading.Lock()

    def running(self, count: int) -> None:
        now = self._clock()
        with self._lock:
            while self._peaks and self._peaks[-1][1] <= count:
                self._peaks.pop()
            self._peaks.append((now, count))

    def environments(self) -> int:
        horizon = self._clock() - self._window_s
        with self._lock:
            self._peaks = [(when, count) for when, count in self._peaks if when >= horizon]
            return self._peaks[0][1] if self._peaks else 0


@dataclass
class Environment:
    function: LambdaFunction
    stop: Callable[[], None]  # ends the environment
    probe: Callable[[], str | None]  # why it cannot serve (its process or container ended)


def local_function_command(emulator_arguments: list[str]) -> list[str]:
    """The Lambda handler as a local process under the emulator."""
    return [
        str(ensure_rie()),
        *emulator_arguments,
        sys.executable,
        "-m",
        "awslambdaric",
        HANDLER,
    ]


class LocalServerless(PooledBackend):
    """Execution environments of the Lambda image (or handler) under the emulator."""

    kind = types_pb2.PLATFORM_SERVERLESS

    def __init__(
        self,
        *,
        store: str,
        image: str,
        runner: str,
        owner: str,
        concurrency: int,
        idle_timeout_s: float,
        min_warm: int,
        sharing: containers.Sharing,
        start_timeout_s: float = 120.0,
        batching: Batching = NO_BATCHING,
    ) -> None:
        super().__init__(
            store=store,
            image=image,
            owner=owner,
            sharing=sharing,
            pool=PoolSettings(
                max_environments=concurrency,
                slots_per_environment=1,
                queue_limit=0,
                idle_timeout_s=idle_timeout_s,
                min_environments=min_warm,
            ),
            start_timeout_s=start_timeout_s,
        )
        self._runner = runner
        self._batching = batching
        self._groups = batching.coalescer(self._invoke, _event_bytes, _BATCH_BYTES)

    def capacity(self) -> Capacity:
        return self._batching.slots(super().capacity())

    def start(self) -> None:
        if self._runner == "auto":
            self._runner = "container" if containers.engine_reachable() else "process"
            if self._runner == "process":
                log.warning("no Docker engine: Lambda environments run as local processes")
        if self._runner == "container":
            self._open_engine()
        else:
            ensure_rie()
        self._open_pool(
            self._start_environment,
            lambda environment: environment.stop(),
            lambda environment: environment.probe(),
            "the local Lambda",
        )

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        if self._groups is not None:
            return self._groups.call(call)
        return _one(self._invoke([call]))

    def _invoke(self, calls: list[PredictCall]) -> list[Answer | Exception]:
        started = time.perf_counter()
        with self._started_pool().lease(0) as lease:
            invoked = time.perf_counter()
            try:
                body = lease.environment.function.invoke(_invocation(calls, self._batching))
            except Unavailable:
                lease.discard()
                raise
        return _answers(
            body,
            self._batching,
            cold_start_seconds=lease.cold_start_seconds,
            execution_seconds=time.perf_counter() - invoked,
            queue_seconds=invoked - started - lease.cold_start_seconds,
        )

    # Environments --------------------------------------------------------------------------

    def _start_environment(self) -> Environment:
        port, runtime_api_port = containers.free_ports(2)
        start = self._start_container if self._runner == "container" else self._start_process
        stop, probe = start(emulator_arguments(port, runtime_api_port))
        client = _lambda_client(
            f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        environment = Environment(LambdaFunction(client, "function"), stop, probe)
        try:
            self._warm_up(environment.function)
        except Exception:
            stop()
            raise
        return environment

    def _warm_up(self, function: LambdaFunction) -> None:
        """The init phase (TensorFlow, the models) runs on the first invocation: do it now."""
        deadline = time.monotonic() + self._start_timeout_s
        while True:
            try:
                function.invoke({"warmup": True}, with_trace=False)
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _start_container(self, emulator_arguments: list[str]) -> StopAndProbe:
        try:
            container = containers.run(
                self._engine,
                self._image,
                role="lambda",
                owner=self._owner,
                sharing=self._sharing,
                entrypoint=[
                    "/usr/local/bin/aws-lambda-rie",
                    *emulator_arguments,
                    "python",
                    "-m",
                    "awslambdaric",
                ],
                command=[HANDLER],
                environment=containers.inherited_environment("straightline-lambda"),
            )
        except Exception as error:
            raise Unavailable(f"could not start a Lambda container: {error}") from None

        return (
            lambda: container.remove(force=True),
            lambda: containers.problem_of(container, "Lambda container"),
        )

    def _start_process(self, emulator_arguments: list[str]) -> StopAndProbe:
        process = subprocess.Popen(
            dying_with_parent(local_function_command(emulator_arguments)),
            env={
                **os.environ,
                "STRAIGHTLINE_MODEL_STORE": str(self._store.root),
                "OTEL_SERVICE_NAME": "straightline-lambda",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        def probe() -> str | None:
            code = process.poll()  # reaps it, too
            return None if code is None else f"Lambda environment process exited ({code})"

        return stop, probe


def emulator_arguments(port: int, runtime_api_port: int) -> list[str]:
    """The emulator's invoke address, and a runtime API address of its own: the default
    (127.0.0.1:9001) would be shared by every emulator on the host, and their runtimes
    would answer each other's invocations."""
    return [
        "--runtime-interface-emulator-address",
        f"127.0.0.1:{port}",
        "--runtime-api-address",
        f"127.0.0.1:{runtime_api_port}",
    ]

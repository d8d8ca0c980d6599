"""Serverless: boto3 `lambda.invoke` (RequestResponse), against AWS Lambda when a function is
configured, else against local execution environments of the Lambda image under AWS's
Runtime Interface Emulator: containers when an engine is reachable, local processes
otherwise. Each environment runs one invocation at a time; they start on demand up to the
concurrency limit and are reaped when idle; beyond the limit a request is throttled, as
Lambda answers 429."""

import base64
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

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
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.platform import Answer, Capacity, PredictCall, ServesStore
from straightline_inference.adapter.pool import EnvironmentPool
from straightline_inference.adapter.pooled import PooledPlatform
from straightline_inference.rie import ensure_rie

log = logging.getLogger(__name__)

# Lambda's limit on a synchronous invocation's request payload (the JSON event).
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
HANDLER = "straightline_inference.lambda_handler.handler"
_INVOKE_TIMEOUT_S = 120


class LambdaFunction:
    """One function to invoke: an AWS function, or one local emulator endpoint."""

    def __init__(self, client, function_name: str):
        self._client = client
        self._function_name = function_name

    def invoke(self, event: dict, *, with_trace: bool = True) -> dict:
        payload = json.dumps(event).encode()
        if len(payload) > PAYLOAD_LIMIT_BYTES:
            raise InvalidArgument(
                f"the request is {len(payload)} bytes once encoded for Lambda, over its "
                f"{PAYLOAD_LIMIT_BYTES}-byte limit for synchronous invocations; send a smaller "
                "image or use another platform"
            )
        options = {"ClientContext": _client_context()} if with_trace else {}
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
        return body


def _client_context() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return base64.b64encode(json.dumps({"custom": carrier}).encode()).decode()


def _event(call: PredictCall) -> dict:
    return {
        "request_id": call.request_id,
        "model": {"name": call.model_name, "version": call.model_version},
        "payload_b64": base64.b64encode(call.payload).decode(),
        "content_type": call.content_type,
        "top_k": call.top_k,
    }


def _answer(body: dict, **timings) -> Answer:
    return Answer(body["model"], body["classes"], **timings)


def _lambda_client(endpoint_url: str | None, **credentials):
    config = botocore.config.Config(
        read_timeout=_INVOKE_TIMEOUT_S, connect_timeout=5, retries={"max_attempts": 0}
    )
    return boto3.client("lambda", endpoint_url=endpoint_url, config=config, **credentials)


class AwsServerless(ServesStore):
    """A function deployed on AWS Lambda (or any endpoint speaking its API)."""

    kind = types_pb2.PLATFORM_SERVERLESS

    def __init__(
        self, *, function_name: str, store: str, concurrency: int, endpoint_url: str | None = None
    ):
        self._function = LambdaFunction(_lambda_client(endpoint_url), function_name)
        self._store = ModelStore(store)
        self._gate = SlotGate(concurrency, 0, name=f"Lambda function {function_name}")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def capacity(self) -> Capacity:
        # AWS keeps environments warm and does not say how many: taken as warm; cold starts
        # show in the service times measured.
        return self._gate.capacity_report(warm=True)

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        started = time.perf_counter()
        with self._gate.slot(0):
            body = self._function.invoke(_event(call))
        return _answer(body, execution_seconds=time.perf_counter() - started)


@dataclass
class Environment:
    function: LambdaFunction
    stop: object  # callable that ends the environment


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


class LocalServerless(PooledPlatform):
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
    ):
        self._store = ModelStore(store)
        self._sharing = sharing
        self._image = image
        self._runner = runner
        self._owner = owner
        self._start_timeout_s = start_timeout_s
        self._pool_options = {
            "max_environments": concurrency,
            "slots_per_environment": 1,
            "queue_limit": 0,
            "idle_timeout_s": idle_timeout_s,
            "min_environments": min_warm,
            "name": "the local Lambda",
        }

    def start(self) -> None:
        if self._runner == "auto":
            self._runner = "container" if containers.engine_reachable() else "process"
            if self._runner == "process":
                log.warning("no Docker engine: Lambda environments run as local processes")
        if self._runner == "container":
            self._engine = containers.engine()
            containers.require_image(self._engine, self._image)
        else:
            ensure_rie()
        self._pool = EnvironmentPool(
            self._start_environment, lambda e: e.stop(), **self._pool_options
        )
        self._pool.fill()

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        started = time.perf_counter()
        with self._pool.lease(0) as lease:
            invoked = time.perf_counter()
            try:
                body = lease.environment.function.invoke(_event(call))
            except Unavailable:
                lease.discard()
                raise
        return _answer(
            body,
            cold_start_seconds=lease.cold_start_seconds,
            execution_seconds=time.perf_counter() - invoked,
            queue_seconds=invoked - started - lease.cold_start_seconds,
        )

    # Environments --------------------------------------------------------------------------

    def _start_environment(self) -> Environment:
        port, runtime_api_port = containers.free_ports(2)
        start = self._start_container if self._runner == "container" else self._start_process
        stop = start(emulator_arguments(port, runtime_api_port))
        client = _lambda_client(
            f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        environment = Environment(LambdaFunction(client, "function"), stop)
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

    def _start_container(self, emulator_arguments: list[str]):
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
        return lambda: container.remove(force=True)

    def _start_process(self, emulator_arguments: list[str]):
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

        return stop


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

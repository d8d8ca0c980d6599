"""The Lambda service emulator through boto3 and through the serverless adapter's AWS path, as
against AWS: answers, cold and warm environments, throttling, payload limits, reaping."""

import base64
import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore.config
import botocore.exceptions
import pytest

from bench.lambda_service.calibration import MODELS, Calibration
from bench.lambda_service.service import Function, LambdaService, serve
from straightline_common.errors import ResourceExhausted
from straightline_inference.adapter.backend import PredictCall
from straightline_inference.adapter.serverless_backend import AwsServerless, init_seconds

IMAGE = b"\xff\xd8 an image"
ANSWER = {
    "model": {"name": "small", "version": "1"},
    "classes": [
        {"label": "cat", "index": 0, "score": 0.7},
        {"label": "dog", "index": 2, "score": 0.2},
    ],
}
QUICK = Calibration(MODELS["small"], memory_mb=2048, round_trip_s=0.0)


class Gate:
    """A sleep that waits until released: invocations stay in flight while a test looks."""

    def __init__(self):
        self.released = threading.Event()
        self.sleeping = threading.Semaphore(0)

    def __call__(self, seconds):
        self.sleeping.release()
        self.released.wait(10)


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def start_service():
    servers = []

    def start(**options) -> tuple[LambdaService, str]:
        service = LambdaService([Function("fn", QUICK, {_sha(IMAGE): ANSWER})], **options)
        server = serve(service)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return service, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def client(endpoint: str):
    return boto3.client(
        "lambda",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(retries={"max_attempts": 0}, max_pool_connections=8),
    )


def event(image=IMAGE, top_k=0) -> bytes:
    return json.dumps({"payload_b64": base64.b64encode(image).decode(), "top_k": top_k}).encode()


def invoke(lambda_client, payload=None, name="fn"):
    return lambda_client.invoke(FunctionName=name, Payload=payload or event(), LogType="Tail")


def error_code(call) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        call()
    return refused.value.response["Error"]["Code"]


def test_the_precomputed_answer_with_a_cold_then_a_warm_start(start_service):
    service, endpoint = start_service()
    lambda_client = client(endpoint)
    first = invoke(lambda_client)
    assert json.loads(first["Payload"].read())["classes"] == ANSWER["classes"]
    assert init_seconds(first["LogResult"]) > 1.0  # the calibrated cold start
    second = invoke(lambda_client, event(top_k=1))
    assert json.loads(second["Payload"].read())["classes"] == ANSWER["classes"][:1]
    assert init_seconds(second["LogResult"]) == 0.0
    assert (service.invocations, service.cold_starts, service.environments("fn")) == (2, 1, (0, 1))


def test_past_the_concurrency_limit_aws_answers_too_many_requests(start_service):
    gate = Gate()
    service, endpoint = start_service(concurrency=2, sleep=gate)
    lambda_client = client(endpoint)
    with ThreadPoolExecutor(2) as callers:
        running = [callers.submit(invoke, lambda_client) for _ in range(2)]
        for _ in range(2):
            assert gate.sleeping.acquire(timeout=5)
        assert error_code(lambda: invoke(lambda_client)) == "TooManyRequestsException"
        gate.released.set()
        assert all(call.result()["StatusCode"] == 200 for call in running)
    assert service.throttled == 1
    assert invoke(lambda_client)["StatusCode"] == 200  # free again once they ended


def test_limits_and_unknowns_are_refused_as_aws_does(start_service):
    _, endpoint = start_service()
    lambda_client = client(endpoint)
    too_large = b"x" * (6 * 1024 * 1024 + 1)
    assert error_code(lambda: invoke(lambda_client, too_large)) == "RequestEntityTooLargeException"
    assert error_code(lambda: invoke(lambda_client, name="other")) == "ResourceNotFoundException"
    unknown = invoke(lambda_client, event(b"another image"))
    assert unknown["FunctionError"] == "Unhandled"
    assert json.loads(unknown["Payload"].read())["errorType"] == "UnknownImage"


def test_idle_environments_are_reaped_and_the_next_start_is_cold(start_service):
    clock = Clock()
    service, endpoint = start_service(reap_after_s=600, clock=clock, sleep=lambda s: None)
    lambda_client = client(endpoint)
    invoke(lambda_client)
    clock.now += 601
    assert service.environments("fn") == (0, 0)
    assert init_seconds(invoke(lambda_client)["LogResult"]) > 0


def test_service_time_scales_with_the_memory_lambda_gives_the_function():
    xception = MODELS["xception"]
    slow, fast = Calibration(xception, 1024, 0.0), Calibration(xception, 3538, 0.0)
    rng = __import__("random").Random(1)
    medians = [sorted(c.service_s(rng) for _ in range(301))[150] for c in (slow, fast)]
    assert medians[0] == pytest.approx(0.0608 * 2 / (1024 / 1769), rel=0.05)
    assert medians[1] == pytest.approx(0.0608, rel=0.05)  # 2 vCPUs: the measured figure


def test_the_serverless_adapter_talks_to_it_as_to_aws(start_service, monkeypatch, tmp_path):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    gate = Gate()
    service, endpoint = start_service(concurrency=1, sleep=gate)
    platform = AwsServerless(
        function_name="fn", store=str(tmp_path), concurrency=2, endpoint_url=endpoint
    )
    call = PredictCall("r1", "small", "", IMAGE, "image/jpeg", 0)
    with ThreadPoolExecutor(1) as caller:
        first = caller.submit(platform.predict, call, 10)
        assert gate.sleeping.acquire(timeout=5)
        with pytest.raises(ResourceExhausted, match="throttled"):
            platform.predict(call, 10)  # the adapter has room, AWS's account does not
        gate.released.set()
        answer = first.result()
    assert answer.classes == ANSWER["classes"]
    assert answer.cold_start_seconds > 1.0
    capacity = platform.capacity()
    assert (capacity.warm_environments, capacity.warm_slots) == (1, 1)
    assert platform.predict(call, 10).cold_start_seconds == 0.0
    assert service.invocations == 2

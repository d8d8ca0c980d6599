"""Fixtures shared by the whole suite. Every process and server a test starts is stopped in
teardown, whether the test passed or not."""

import os

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.otlp import OtlpReceiver
from tests.support.s3 import S3Endpoint

_SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_SPANS))
trace.set_tracer_provider(_provider)


@pytest.fixture
def spans():
    """Spans finished in the test process (clients, in-process servers) during the test."""
    _SPANS.clear()
    yield _SPANS
    _SPANS.clear()


@pytest.fixture(scope="session")
def otlp_receiver():
    """One OTLP receiver for the session; tests pick their spans by trace or span id."""
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3 endpoint on loopback with an empty bucket "models"; tests use their own prefix."""
    endpoint = S3Endpoint().start()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def channels():
    """Opens loopback channels and closes them all at the end."""
    opened = []

    def open_channel(address: str) -> grpc.Channel:
        channel = grpc.insecure_channel(address)
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        channel.close()


def _docker_unavailable_reason() -> str:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        for image in (
            "straightline/model-server:dev",
            "straightline/lambda:dev",
            "straightline/trainer:dev",
            "straightline/placer:dev",
            "straightline/devrunner:dev",
            "straightline/adapter:dev",
        ):
            client.images.get(image)
        client.close()
    except Exception as error:
        return f"no Docker engine with the images (make images): {type(error).__name__}"
    return ""


def pytest_collection_modifyitems(config, items):
    """Docker tests are skipped where no engine (or no image) is available, and fail there
    when STRAIGHTLINE_REQUIRE_DOCKER=1 (CI)."""
    if not any(item.get_closest_marker("docker") for item in items):
        return
    reason = _docker_unavailable_reason()
    if not reason:
        return
    if os.environ.get("STRAIGHTLINE_REQUIRE_DOCKER") == "1":
        raise pytest.UsageError(f"STRAIGHTLINE_REQUIRE_DOCKER=1 but {reason}")
    for item in items:
        if item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.skip(reason=reason))

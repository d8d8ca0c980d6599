"""Fixtures shared by the whole suite. Every process and server a test starts is stopped in
teardown, whether the test passed or not."""

import os

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from straightline_common import auth
from straightline_common.channels import open_channel as open_authenticated_channel
from straightline_common.channels import with_token
from tests.support.otlp import OtlpReceiver
from tests.support.s3 import S3Endpoint

_SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_SPANS))
trace.set_tracer_provider(_provider)


@pytest.fixture(scope="session", autouse=True)
def tokens(tmp_path_factory):
    """The suite's own tokens file, made as a service makes it, for every server and client
    of the session (subprocesses inherit the variable)."""
    path = tmp_path_factory.mktemp("credentials") / "tokens.json"
    previous = os.environ.get(auth.TOKENS_FILE_ENV)
    os.environ[auth.TOKENS_FILE_ENV] = str(path)
    yield auth.load_tokens(path, create=True)
    if previous is None:
        del os.environ[auth.TOKENS_FILE_ENV]
    else:
        os.environ[auth.TOKENS_FILE_ENV] = previous


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
def channels(tokens):
    """Opens loopback channels whose calls carry a role's token (an operator's unless
    another is named), and closes them all at the end."""
    opened = []

    def open_channel(
        address: str,
        role: auth.Role | None = auth.Role.OPERATOR,
        token: str | None = None,
        tls=None,
    ) -> grpc.Channel:
        """As `role`; with `token`, carrying that token instead; with neither, no credentials;
        with `tls` (TlsFiles), over mutual TLS as its certificate says."""
        if tls is not None:
            channel = open_authenticated_channel(address, auth.Role.CLIENT, tls=tls)
        elif token is not None:
            channel = with_token(address, token)
        elif role is not None:
            channel = open_authenticated_channel(address, role, tokens=tokens)
        else:
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

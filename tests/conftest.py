"""Fixtures shared by the whole suite. Every process and server a test starts is stopped in
teardown, whether the test passed or not."""

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.otlp import OtlpReceiver

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

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from straightline_common.errors import InvalidArgument
from straightline_common.logs import JsonFormatter
from straightline_common.telemetry import _exporter_from_environment, configure_tracing


def format_record(message, **extra):
    record = logging.LogRecord("test", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return json.loads(JsonFormatter("svc").format(record))


def test_log_lines_are_json_with_the_trace_and_span_ids(spans):
    with trace.get_tracer("test").start_as_current_span("work") as span:
        entry = format_record("placed", platform="flask")
    context = span.get_span_context()
    assert entry["message"] == "placed"
    assert entry["level"] == "warning"
    assert entry["service"] == "svc"
    assert entry["platform"] == "flask"
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")


def test_log_lines_outside_a_span_have_no_trace_id():
    assert "trace_id" not in format_record("idle")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, type(None)),
        ({"OTEL_TRACES_EXPORTER": "console"}, ConsoleSpanExporter),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_TRACES_EXPORTER": "none",
            },
            type(None),
        ),
    ],
)
def test_exporter_follows_the_standard_variables(environ, expected):
    assert isinstance(_exporter_from_environment(environ), expected)


def test_otlp_is_the_default_when_an_endpoint_is_set():
    exporter = _exporter_from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    assert type(exporter).__name__ == "OTLPSpanExporter"
    exporter.shutdown()


def test_unknown_exporter_is_refused():
    with pytest.raises(InvalidArgument, match="OTEL_TRACES_EXPORTER='zipkin' is not supported"):
        _exporter_from_environment({"OTEL_TRACES_EXPORTER": "zipkin"})


@pytest.mark.parametrize(
    ("sampler", "argument", "sampled"),
    [
        ("always_off", "", False),
        ("traceidratio", "0", False),
        ("traceidratio", "1", True),
        ("parentbased_always_on", "", True),
    ],
)
def test_sampling_follows_the_standard_variables(monkeypatch, sampler, argument, sampled):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    provider = configure_tracing("sampling-test")
    span = provider.get_tracer("test").start_span("request")
    assert span.get_span_context().trace_flags.sampled is sampled
    span.end()
    provider.shutdown()


def test_spans_name_the_service_its_namespace_and_version():
    provider = configure_tracing("straightline-placer", {"OTEL_TRACES_EXPORTER": "none"})
    try:
        attributes = provider.resource.attributes
        assert attributes["service.name"] == "straightline-placer"
        assert attributes["service.namespace"] == "straightline"
        assert attributes["service.version"].count(".") == 2  # the package's, e.g. 0.1.0
    finally:
        provider.shutdown()

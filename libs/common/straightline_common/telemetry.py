"""OpenTelemetry set-up from the standard OTEL_* variables, and W3C context on gRPC metadata.

Tracing is always on inside the process (spans exist, trace ids reach the logs and the next
hop); what leaves the process is chosen by the standard variables:

- OTEL_SDK_DISABLED=true: no SDK at all (no-op spans; trace context is still propagated).
- OTEL_TRACES_EXPORTER: "otlp", "console" or "none". Default: "otlp" when an OTLP endpoint is
  set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), else "none", so the
  embedded default prints no export errors when no collector runs.
- OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*,
  OTEL_EXPORTER_OTLP_*: read by the SDK itself.
"""

import importlib.metadata
import os
from collections.abc import Iterable, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import (
    PROCESS_PID,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from straightline_common.errors import InvalidArgument

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configure_tracing(
    service_name: str, environ: Mapping[str, str] = os.environ
) -> TracerProvider | None:
    """Install the global tracer provider for a service; returns it (None when disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    resource = Resource.create(
        {
            SERVICE_NAME: environ.get("OTEL_SERVICE_NAME", service_name),
            SERVICE_NAMESPACE: "straightline",
            SERVICE_VERSION: straightline_version(),
            PROCESS_PID: os.getpid(),  # tells apart the processes of one service (replicas)
        }
    )
    provider = TracerProvider(resource=resource)
    exporter = _exporter_from_environment(environ)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def straightline_version() -> str:
    """StraightLine's version (its common library's, installed with every service)."""
    try:
        return importlib.metadata.version("straightline-common")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _exporter_from_environment(environ: Mapping[str, str]) -> SpanExporter | None:
    has_endpoint = any(environ.get(name) for name in _ENDPOINT_VARIABLES)
    choice = environ.get("OTEL_TRACES_EXPORTER", "otlp" if has_endpoint else "none")
    choice = choice.strip().lower()
    if choice == "none":
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    if choice == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise InvalidArgument(
        f"OTEL_TRACES_EXPORTER={choice!r} is not supported; use 'otlp', 'console' or 'none'."
    )


def context_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """The trace context carried by incoming gRPC metadata (W3C traceparent/tracestate)."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    return propagate.extract(carrier)


def metadata_with_context() -> list[tuple[str, str]]:
    """gRPC metadata carrying the current trace context to the next hop."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def environment_with_context() -> dict[str, str]:
    """Environment variables carrying the current trace context into a child process or
    container (TRACEPARENT, TRACESTATE: the environment-carrier convention)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key.upper(): value for key, value in carrier.items()}


def current_trace_id() -> str:
    """The current span's trace id as 32 hex digits, or '' outside any sampled or recording span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""

"""Prometheus metrics: every service serves its own registry on a port of its own
(`/metrics`), set by its `metrics_listen` setting (host:port, port 0 for any free one, or
`off`)."""

from prometheus_client import CollectorRegistry, start_http_server

from straightline_common.config import Setting, parse_address


def parse_metrics_listen(text: str) -> str:
    try:
        return text if text == "off" else parse_address(text)
    except ValueError:
        raise ValueError("expected host:port, e.g. 127.0.0.1:9464, or off") from None


def metrics_listen_setting(env: str, default: str) -> Setting:
    return Setting(
        "metrics_listen",
        env,
        parse_metrics_listen,
        default,
        "address of the Prometheus /metrics endpoint (port 0: any free one, written to the "
        "port file), or 'off'",
    )


def serve_metrics(registry: CollectorRegistry, listen: str) -> int:
    """Starts the /metrics endpoint unless `listen` is off; returns the bound port (0: off)."""
    if listen == "off":
        return 0
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host, registry=registry)
    return server.server_address[1]

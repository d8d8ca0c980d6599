"""Real placer and adapter processes on loopback port 0, and the calls tests make on them.
Whoever starts a process terminates it (a fixture's teardown, or a `finally`)."""

from straightline.v1 import placer_pb2
from straightline_common.processes import ServiceProcess


def tracing_env(otlp_endpoint: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}


def placer_process(workdir, otlp_endpoint: str, *args: str) -> ServiceProcess:
    return ServiceProcess(
        "straightline_placer",
        ["--listen", "127.0.0.1:0", "--metrics-listen", "off", *args],
        workdir,
        env=tracing_env(otlp_endpoint),
    )


def adapter_process(
    workdir, platform: str, store, otlp_endpoint: str, *args: str, placer="off", env=None
) -> ServiceProcess:
    return ServiceProcess(
        "straightline_inference.adapter",
        [
            "--platform",
            platform,
            "--listen",
            "127.0.0.1:0",
            "--placer",
            placer,
            "--store",
            str(store),
            *args,
        ],
        workdir,
        env={**tracing_env(otlp_endpoint), **(env or {})},
    )


def wait_for_instances(stub, count: int, timeout: float = 30.0):
    """The placer's view once it holds `count` instances."""
    watch = stub.WatchResources(placer_pb2.WatchResourcesRequest(), timeout=timeout)
    try:
        for view in watch:
            if len(view.instances) == count:
                return view
    finally:
        watch.cancel()
    raise AssertionError(f"the placer's view never held {count} instances")

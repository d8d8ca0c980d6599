import pytest

from straightline.v1 import placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.processes import ServiceProcess
from straightline_inference.simulated import SimulatedAdapter

FLASK, DOCKER, SERVERLESS = (
    types_pb2.PLATFORM_FLASK,
    types_pb2.PLATFORM_DOCKER,
    types_pb2.PLATFORM_SERVERLESS,
)


@pytest.fixture
def start_placer(tmp_path, otlp_receiver):
    """Starts the placer as a real process on loopback port 0, exporting spans over OTLP to
    the test's receiver; stops it at the end."""
    started = []

    def start(*args: str) -> ServiceProcess:
        process = ServiceProcess(
            "straightline_placer",
            ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *args],
            tmp_path,
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "STRAIGHTLINE_LOG_LEVEL": "debug",
            },
        )
        started.append(process)
        return process.wait_ready()

    yield start
    for process in started:
        process.terminate()


@pytest.fixture
def placer(start_placer, request):
    """A placer whose heartbeat timeout is 1 s, or `@pytest.mark.heartbeat_timeout(seconds)`."""
    marker = request.node.get_closest_marker("heartbeat_timeout")
    return start_placer("--heartbeat-timeout-s", str(marker.args[0] if marker else 1))


@pytest.fixture
def stub(placer, channels):
    return placer_pb2_grpc.PlacerServiceStub(channels(placer.address))


@pytest.fixture
def adapter_stub(placer, channels):
    """The placer as an adapter calls it (heartbeats)."""
    return placer_pb2_grpc.PlacerServiceStub(channels(placer.address, Role.ADAPTER))


@pytest.fixture
def adapters(placer):
    """Starts simulated adapter instances that heartbeat to the placer; stops them all."""
    started = []

    def start(platform, **options) -> SimulatedAdapter:
        adapter = SimulatedAdapter(platform, placer.address, **options).start()
        started.append(adapter)
        assert adapter.wait_registered(), "the placer did not acknowledge the adapter"
        return adapter

    yield start
    for adapter in started:
        adapter.crash()

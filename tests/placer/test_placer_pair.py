"""No single point of failure (issue 16): two placers active-active, adapters heartbeating to
both, clients balancing over both; and one placer killed and back on its port. Real placer
processes, simulated adapters, an open loop of real Infer calls, loopback only."""

import signal
import time

import pytest

from straightline.v1 import placer_pb2_grpc, types_pb2
from straightline_inference.adapter.containers import free_ports
from straightline_inference.simulated import SimulatedAdapter
from tests.support.load import OpenLoop

pytestmark = pytest.mark.faults
MODEL = types_pb2.ModelRef(name="demo")
FLASK, DOCKER = types_pb2.PLATFORM_FLASK, types_pb2.PLATFORM_DOCKER


@pytest.fixture
def adapters_of():
    started = []

    def start(placers: str, platform: int) -> SimulatedAdapter:
        adapter = SimulatedAdapter(platform, placers, capacity=8, heartbeat_interval_s=0.1)
        started.append(adapter.start())
        assert adapter.wait_registered(10), "not every placer acknowledged the adapter"
        return adapter

    yield start
    for adapter in started:
        adapter.stop()


def test_one_placer_of_two_killed_fails_no_request(start_placer, channels, adapters_of):
    first, second = (start_placer("--heartbeat-timeout-s", "2") for _ in range(2))
    both = f"{first.address},{second.address}"
    flask, docker = adapters_of(both, FLASK), adapters_of(both, DOCKER)
    stub = placer_pb2_grpc.PlacerServiceStub(channels(both))
    with OpenLoop(stub) as load:
        time.sleep(1.5)
        first.process.send_signal(signal.SIGKILL)
        time.sleep(2.5)
    assert len(load.outcomes) >= 120
    assert load.failed() == []
    # A request the killed placer had forwarded but not answered is retried through the other
    # and served again: at least once (inference is idempotent), and only those few twice.
    assert len(load.outcomes) <= flask.served + docker.served <= len(load.outcomes) + 3


def test_clients_are_served_within_a_second_of_the_only_placers_return(
    start_placer, channels, adapters_of
):
    [port] = free_ports(1)
    address = f"127.0.0.1:{port}"
    placer = start_placer("--listen", address, "--heartbeat-timeout-s", "2")
    adapters_of(address, FLASK)
    stub = placer_pb2_grpc.PlacerServiceStub(channels(address))
    with OpenLoop(stub) as load:
        time.sleep(1)
        placer.process.send_signal(signal.SIGKILL)
        placer.process.wait()
        time.sleep(5)  # long enough for gRPC's default backoff to reach seconds
        back = start_placer("--listen", address, "--heartbeat-timeout-s", "2")
        returned = time.monotonic()
        time.sleep(3)
    served_after = [o.sent for o in load.outcomes if o.answer and o.sent > returned]
    assert served_after, f"nothing was served after the placer returned: {load.failed()[-3:]}"
    # Measured 0.29-0.96 s here (docs/reliability.md; target 1 s); gRPC's default backoff
    # would wait about 4 s after this outage. The bound leaves room for a loaded machine.
    assert served_after[0] - returned < 2.5
    assert back.process.poll() is None

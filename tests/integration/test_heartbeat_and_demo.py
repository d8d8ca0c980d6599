import subprocess
import sys
from pathlib import Path

import pytest

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from tests.integration.conftest import FLASK
from tests.integration.test_placer import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_adapter_reconnects_when_the_placer_restarts(start_placer, adapters, placer, channels):
    adapter = adapters(FLASK, capacity=2)
    port = placer.ports["grpc"]
    placer.terminate()
    assert wait_until(lambda: not adapter.wait_registered(0))
    restarted = start_placer("--heartbeat-timeout-s", "1", "--listen", f"127.0.0.1:{port}")
    assert adapter.wait_registered(10)
    stub = placer_pb2_grpc.PlacerServiceStub(channels(restarted.address))
    request = placer_pb2.PlaceRequest(model=types_pb2.ModelRef(name="demo"), data_size_bytes=10)
    assert stub.Place(request, timeout=2).placement.instance_id == adapter.instance_id


@pytest.mark.slow
def test_the_demo_runs_to_the_end():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for platform in ("flask", "docker", "serverless"):
        assert f"\n{platform} " in result.stdout
    for branch in ("FLASK_AVAILABLE", "LARGE_DATA", "HIGH_FREQUENCY_SMALL_DATA"):
        assert f"BRANCH_{branch}" in result.stdout

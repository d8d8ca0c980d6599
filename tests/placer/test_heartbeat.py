from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from tests.placer.conftest import FLASK
from tests.support.waiting import wait_until


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

"""Bad input gets the right status code and a sentence; the placer keeps running and keeps
its registered instances."""

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from straightline.v1 import placer_pb2, types_pb2
from tests.placer.conftest import DOCKER, FLASK

MODEL = types_pb2.ModelRef(name="demo")


def report(**fields):
    values = {
        "instance_id": "bad-1",
        "platform": FLASK,
        "address": "127.0.0.1:9",
        "capacity_total": 2,
        "capacity_free": 1,
        "models": [MODEL],
    }
    values.update(fields)
    return types_pb2.InstanceReport(**values)


def batching_settings(**limits) -> placer_pb2.PlatformSettings:
    """Docker's settings, valid but for the batching ceilings given."""
    return placer_pb2.PlatformSettings(
        platform=DOCKER,
        memory_mb=2048,
        bandwidth_bytes_per_second=10**9,
        max_request_bytes=10**6,
        batching=types_pb2.BatchingLimits(**limits),
    )


def send_heartbeats(stub, *reports):
    requests = iter([placer_pb2.HeartbeatRequest(report=r) for r in reports])
    return list(stub.Heartbeat(requests, timeout=5))


@pytest.fixture
def registered(stub, adapters):
    """One healthy Flask and one Docker instance that must survive every bad request."""
    return adapters(FLASK, capacity=2), adapters(DOCKER, capacity=2)


def assert_still_serving(stub, registered):
    placement = stub.Place(placer_pb2.PlaceRequest(model=MODEL, data_size_bytes=100)).placement
    assert placement.instance_id == registered[0].instance_id
    view = next(iter(stub.WatchResources(placer_pb2.WatchResourcesRequest(), timeout=5)))
    assert {v.report.instance_id for v in view.instances} == {a.instance_id for a in registered}


@pytest.mark.parametrize(
    ("request_message", "code", "message"),
    [
        (
            placer_pb2.PlaceRequest(data_size_bytes=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "model.name is empty",
        ),
        (
            placer_pb2.PlaceRequest(model=MODEL),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request is empty",
        ),
        (
            # A negative size from a client that casts int64 to uint64 arrives enormous.
            placer_pb2.PlaceRequest(model=MODEL, data_size_bytes=2**64 - 5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "over the largest request the placer takes",
        ),
        (
            placer_pb2.PlaceRequest(model=types_pb2.ModelRef(name="unknown"), data_size_bytes=10),
            grpc.StatusCode.NOT_FOUND,
            "no live instance serves model 'unknown'",
        ),
        (
            placer_pb2.PlaceRequest(
                model=types_pb2.ModelRef(name="demo", version="9"), data_size_bytes=10
            ),
            grpc.StatusCode.NOT_FOUND,
            "version '9'",
        ),
    ],
)
def test_bad_place_requests(stub, registered, request_message, code, message):
    with pytest.raises(grpc.RpcError) as refused:
        stub.Place(request_message)
    assert refused.value.code() == code
    assert message in refused.value.details()
    assert_still_serving(stub, registered)


def test_an_oversized_batch_is_refused(stub, registered):
    request = placer_pb2.PlaceRequest(model=MODEL, data_size_bytes=10)
    with pytest.raises(grpc.RpcError) as refused:
        stub.PlaceBatch(placer_pb2.PlaceBatchRequest(requests=[request] * 10_001))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests has 10001 entries, over the limit of 10000" in refused.value.details()
    assert_still_serving(stub, registered)


def test_empty_infer_payload_is_invalid(stub, registered):
    with pytest.raises(grpc.RpcError) as refused:
        stub.Infer(placer_pb2.InferRequest(model=MODEL, content_type="image/png"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in refused.value.details()
    assert_still_serving(stub, registered)


def test_the_adapters_own_errors_pass_through_without_fallback(stub, registered):
    with pytest.raises(grpc.RpcError) as refused:
        stub.Infer(
            placer_pb2.InferRequest(model=MODEL, payload=b"abc", content_type="text/plain"),
            timeout=5,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "content type 'text/plain'" in refused.value.details()
    assert registered[0].instance_id in refused.value.details()
    assert registered[1].served == 0
    assert_still_serving(stub, registered)


@pytest.mark.parametrize(
    ("bad_report", "message"),
    [
        (report(instance_id=""), "without instance_id"),
        (report(platform=types_pb2.PLATFORM_UNSPECIFIED), "platform must be"),
        (report(address="nowhere"), "address must be host:port"),
        (report(capacity_free=5, capacity_total=2), "capacity_free (5) is more than"),
        (report(models=[types_pb2.ModelRef(name="")]), "model name '' is not valid"),
        (report(models=[types_pb2.ModelRef(name="../up")]), "model name '../up' is not valid"),
        (report(instance_id="a/b"), "instance_id 'a/b' is not valid"),
        (report(capacity_total=2**32 - 1, capacity_free=1), "capacity_total must be at most"),
    ],
)
def test_malformed_heartbeats_are_refused(stub, adapter_stub, registered, bad_report, message):
    with pytest.raises(grpc.RpcError) as refused:
        send_heartbeats(adapter_stub, bad_report)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()
    assert_still_serving(stub, registered)


def test_a_stream_cannot_switch_instance(adapter_stub, registered):
    real = registered[0].address  # the placer checks that an advertised address is an adapter
    with pytest.raises(grpc.RpcError) as refused:
        send_heartbeats(
            adapter_stub,
            report(instance_id="a", address=real),
            report(instance_id="b", address=real),
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "open one stream per instance" in refused.value.details()


def test_duplicate_instance_id_is_refused(stub, adapter_stub, registered):
    taken = registered[0].instance_id
    with pytest.raises(grpc.RpcError) as refused:
        send_heartbeats(adapter_stub, report(instance_id=taken))
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert f"instance id {taken!r} is already reporting" in refused.value.details()
    assert_still_serving(stub, registered)


@pytest.mark.parametrize(
    ("fields", "paths", "message"),
    [
        ({"frequency_threshold_rps": -1}, ["frequency_threshold_rps"], "must be a positive"),
        ({"data_size_threshold_bytes": 7_000_000}, ["data_size_threshold_bytes"], "6 MB"),
        ({}, ["frequency_window"], "frequency_window must be between"),
        ({}, ["colour"], "unknown field(s) colour"),
        ({"pinned_platform": 42}, ["pinned_platform"], "pinned_platform must be"),
        ({"placement_rule": 9}, ["placement_rule"], "latency-aware, slo-aware"),
        ({"slo_attainment_target": 0}, ["slo_attainment_target"], "between 0.5 and 1 of the"),
        (
            {"latency_objectives": {"demo": duration_pb2.Duration(seconds=7200)}},
            ["latency_objectives"],
            "a latency objective must be between",
        ),
        (
            {"platform_settings": [placer_pb2.PlatformSettings(platform=3, memory_mb=64)]},
            ["platform_settings"],
            "platform_settings of serverless: memory_mb",
        ),
        (
            {
                "platform_settings": [
                    placer_pb2.PlatformSettings(
                        platform=1,
                        memory_mb=2048,
                        bandwidth_bytes_per_second=1,
                        max_request_bytes=1,
                        host="a/b",
                    )
                ]
            },
            ["platform_settings"],
            "platform_settings of flask: host 'a/b' is not valid",
        ),
        (
            {"platform_settings": [placer_pb2.PlatformSettings(platform=0)]},
            ["platform_settings"],
            "each entry must name a platform",
        ),
        (
            {"platform_settings": [batching_settings(max_batch_size=1000)]},
            ["platform_settings"],
            "platform_settings of docker: batching.max_batch_size must be between 1 and 256",
        ),
        (
            {
                "platform_settings": [
                    batching_settings(max_queue_delay=duration_pb2.Duration(seconds=5))
                ]
            },
            ["platform_settings"],
            "platform_settings of docker: batching.max_queue_delay must be between 0 and 1000 ms",
        ),
    ],
)
def test_invalid_policy_is_refused_and_the_old_one_kept(stub, registered, fields, paths, message):
    before = stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy
    with pytest.raises(grpc.RpcError) as refused:
        stub.UpdatePolicy(
            placer_pb2.UpdatePolicyRequest(
                policy=placer_pb2.Policy(**fields),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()
    assert stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy == before
    assert_still_serving(stub, registered)

"""The placer as an attacker on its port finds it: every attempt gets the right status code
and a sentence that does not echo the input, and the placer keeps serving correct answers
with its state unchanged. Real placer process, simulated adapters, loopback only."""

import signal
import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.channels import with_token
from straightline_common.processes import health_status
from tests.placer.conftest import DOCKER, FLASK
from tests.support.callers import caller_channel
from tests.support.throttle import ThrottlingProxy
from tests.support.waiting import wait_until

MODEL = types_pb2.ModelRef(name="demo")
CODE = grpc.StatusCode


@pytest.fixture
def registered(adapters):
    """A healthy Flask instance that must keep its place through every attack."""
    return adapters(FLASK, capacity=2)


def report(instance_id="stranger-1", **fields) -> types_pb2.InstanceReport:
    values = dict(
        instance_id=instance_id,
        platform=FLASK,
        address="127.0.0.1:9",
        capacity_total=2,
        capacity_free=2,
        models=[MODEL],
    )
    return types_pb2.InstanceReport(**{**values, **fields})


def heartbeat(channel, *reports):
    stub = placer_pb2_grpc.PlacerServiceStub(channel)
    requests = iter([placer_pb2.HeartbeatRequest(report=r) for r in reports])
    return list(stub.Heartbeat(requests, timeout=5))


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def live_ids(stub) -> set[str]:
    view = next(stub.WatchResources(placer_pb2.WatchResourcesRequest(), timeout=5))
    return {i.report.instance_id for i in view.instances}


def assert_still_serving(placer, stub, registered):
    assert health_status(placer.address) == 1  # SERVING
    answer = stub.Infer(
        placer_pb2.InferRequest(model=MODEL, payload=b"abc", content_type="image/png"), timeout=5
    )
    assert answer.served_instance_id == registered.instance_id
    assert live_ids(stub) == {registered.instance_id}


# Identity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "code", "sentence"),
    [
        ("nobody", CODE.UNAUTHENTICATED, "Heartbeat needs credentials"),
        ("forger", CODE.UNAUTHENTICATED, "Heartbeat needs credentials"),
        ("client", CODE.PERMISSION_DENIED, "is for adapter; this caller is client"),
        ("operator", CODE.PERMISSION_DENIED, "is for adapter; this caller is operator"),
        ("placer", CODE.PERMISSION_DENIED, "is for adapter; this caller is placer"),
    ],
)
def test_only_an_adapter_may_register_an_instance(
    placer, stub, channels, registered, caller, code, sentence
):
    refused = refusal(lambda: heartbeat(caller_channel(channels, placer, caller), report()))
    assert refused.code() == code and sentence in refused.details()
    assert_still_serving(placer, stub, registered)


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        ("nobody", CODE.UNAUTHENTICATED),
        ("forger", CODE.UNAUTHENTICATED),
        ("client", CODE.PERMISSION_DENIED),
        ("adapter", CODE.PERMISSION_DENIED),
    ],
)
def test_only_an_operator_may_change_the_policy(placer, stub, channels, registered, caller, code):
    before = stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy
    outage = placer_pb2.UpdatePolicyRequest(
        policy=placer_pb2.Policy(heartbeat_timeout=duration_pb2.Duration(nanos=100_000_000)),
        update_mask=field_mask_pb2.FieldMask(paths=["heartbeat_timeout"]),
    )
    attacker = placer_pb2_grpc.PlacerServiceStub(caller_channel(channels, placer, caller))
    refused = refusal(lambda: attacker.UpdatePolicy(outage, timeout=5))
    assert refused.code() == code
    assert stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy == before
    assert_still_serving(placer, stub, registered)


def test_readers_need_credentials_too_but_health_and_reflection_do_not(placer, channels):
    anonymous = placer_pb2_grpc.PlacerServiceStub(caller_channel(channels, placer, "nobody"))
    request = placer_pb2.PlaceRequest(model=MODEL, data_size_bytes=10)
    assert refusal(lambda: anonymous.Place(request, timeout=5)).code() == CODE.UNAUTHENTICATED
    assert health_status(placer.address) == 1


def test_an_open_instance_id_cannot_be_taken_by_another_stream(placer, stub, channels, registered):
    taken = report(registered.instance_id, capacity_total=1000, capacity_free=1000)
    refused = refusal(lambda: heartbeat(channels(placer.address, Role.ADAPTER), taken))
    assert refused.code() == CODE.ALREADY_EXISTS
    assert_still_serving(placer, stub, registered)


# Limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"request_id": "a\r\nX-Evil: 1"}, "request_id contains a control character"),
        ({"request_id": "r" * 300_000}, "request_id is 300000 characters long, over the limit"),
        ({"model": types_pb2.ModelRef(name="m" * 1_000_000)}, "over the limit of 1024"),
        ({"model": types_pb2.ModelRef(name="../etc")}, "model name '../etc' is not valid"),
        ({"model": types_pb2.ModelRef(name="a/b?c#d")}, "model name 'a/b?c#d' is not valid"),
        ({"model": types_pb2.ModelRef(name="demo", version="../1")}, "model version '../1'"),
    ],
)
def test_hostile_strings_are_refused_without_being_echoed(
    placer, stub, registered, fields, sentence
):
    request = placer_pb2.InferRequest(
        **{"model": MODEL, "payload": b"abc", "content_type": "image/png", **fields}
    )
    refused = refusal(lambda: stub.Infer(request, timeout=5))
    assert refused.code() == CODE.INVALID_ARGUMENT and sentence in refused.details()
    assert len(refused.details()) < 400
    assert registered.served == 0
    assert_still_serving(placer, stub, registered)


def test_a_payload_over_the_limit_is_a_size_error_not_a_capacity_one(placer, stub, registered):
    request = placer_pb2.InferRequest(
        model=MODEL, payload=b"x" * (21 * 1024 * 1024), content_type="image/png"
    )
    refused = refusal(lambda: stub.Infer(request, timeout=10))
    assert refused.code() == CODE.RESOURCE_EXHAUSTED
    assert "larger than max" in refused.details()  # gRPC's sentence, naming the limit
    slightly = placer_pb2.InferRequest(
        model=MODEL, payload=b"x" * (16 * 1024 * 1024 + 1), content_type="image/png"
    )
    refused = refusal(lambda: stub.Infer(slightly, timeout=10))
    assert refused.code() == CODE.INVALID_ARGUMENT
    assert "over the limit of 16777216 bytes" in refused.details()
    assert_still_serving(placer, stub, registered)


def test_a_capacity_that_would_overflow_the_sums_is_refused(placer, stub, channels, registered):
    huge = report(capacity_total=2**32 - 1, capacity_free=2**32 - 1)
    refused = refusal(lambda: heartbeat(channels(placer.address, Role.ADAPTER), huge))
    assert refused.code() == CODE.INVALID_ARGUMENT
    assert "capacity_total must be at most 100000" in refused.details()
    assert_still_serving(placer, stub, registered)


def test_a_watch_interval_over_a_minute_is_refused(placer, stub, registered):
    forever = placer_pb2.WatchResourcesRequest(min_interval=duration_pb2.Duration(seconds=10**9))
    refused = refusal(lambda: next(stub.WatchResources(forever, timeout=5)))
    assert refused.code() == CODE.INVALID_ARGUMENT and "at most 60 s" in refused.details()


def test_cancelled_watches_give_their_threads_back(placer, stub, registered):
    slow = placer_pb2.WatchResourcesRequest(min_interval=duration_pb2.Duration(seconds=60))
    for _ in range(80):  # more than the placer's workers
        watch = stub.WatchResources(slow)
        next(watch)
        watch.cancel()
    assert_still_serving(placer, stub, registered)


def test_undecodable_heartbeats_neither_crash_nor_wedge_the_placer(
    placer, stub, channels, registered
):
    raw = channels(placer.address, Role.ADAPTER).stream_stream(
        "/straightline.v1.PlacerService/Heartbeat",
        request_serializer=lambda data: data,
        response_deserializer=lambda data: data,
    )
    for _ in range(2):
        refused = refusal(lambda: list(raw(iter([b"\xff\xff\xff", b"\x0a\xff"]), timeout=5)))
        assert refused.code() == CODE.INVALID_ARGUMENT
        assert "does not parse as this method's message" in refused.details()
    assert_still_serving(placer, stub, registered)
    placer.process.send_signal(signal.SIGTERM)
    assert placer.process.wait(15) == 0, "the placer did not stop cleanly on SIGTERM"


def test_300_large_calls_at_once_are_all_carried_and_health_checks_answered(placer, stub, adapters):
    # A slow platform with room for all of them: half a second each, 64 at a time. The placer
    # holds no thread per call (its 64 workers serve the other methods), so all 300 wait on
    # the platform at once, and health checks are answered meanwhile.
    slow = adapters(FLASK, capacity=64, queue_limit=300, service_time_s=0.5)
    request = placer_pb2.InferRequest(
        model=MODEL, payload=b"\xff" * (1024 * 1024), content_type="image/jpeg"
    )
    calls = [stub.Infer.future(request, timeout=30) for _ in range(300)]
    try:
        assert wait_until(lambda: slow.served + slow.refused > 0, timeout=10)
        assert [health_status(placer.address) for _ in range(5)] == [1] * 5  # SERVING
        codes = [call.exception().code() if call.exception() else CODE.OK for call in calls]
        assert health_status(placer.address) == 1
    finally:
        for call in calls:
            call.cancel()
    assert codes == [CODE.OK] * 300
    assert slow.served >= 300 and slow.refused == 0


@pytest.mark.heartbeat_timeout(30)  # held for longer than this, they would be closed
def test_held_streams_cannot_take_the_threads_of_health_checks_and_requests(
    placer, stub, channels, registered
):
    release = threading.Event()

    def idle():
        release.wait()
        yield from ()

    attacker = placer_pb2_grpc.PlacerServiceStub(channels(placer.address, Role.ADAPTER))
    held = [attacker.Heartbeat(idle()) for _ in range(80)]  # past the per-host limit of 32
    try:
        refused = [call for call in held if wait_until(call.done, timeout=0.2)]
        assert len(refused) == 80 - 31  # one stream of this host is the adapter's
        assert {call.code() for call in refused} == {CODE.RESOURCE_EXHAUSTED}
        assert "at most 32 streams at once from one host" in refused[0].details()
        assert health_status(placer.address) == 1
        answer = stub.Infer(
            placer_pb2.InferRequest(model=MODEL, payload=b"abc", content_type="image/png"),
            timeout=5,
        )
        assert answer.served_instance_id == registered.instance_id
    finally:
        release.set()
        for call in held:
            call.cancel()


def test_a_heartbeat_stream_that_goes_quiet_is_closed_after_the_heartbeat_timeout(
    placer, stub, channels, registered
):
    release = threading.Event()

    def once_then_quiet():
        yield placer_pb2.HeartbeatRequest(report=report("quiet-1", address=registered.address))
        release.wait()

    def never():
        release.wait()
        yield from ()

    attacker = placer_pb2_grpc.PlacerServiceStub(channels(placer.address, Role.ADAPTER))
    quiet, silent = attacker.Heartbeat(once_then_quiet()), attacker.Heartbeat(never())
    try:
        next(quiet)  # registered
        # The placer's heartbeat timeout is 1 s; its sweep runs 4 times a second.
        assert wait_until(lambda: quiet.done() and silent.done(), timeout=5)
        assert {quiet.code(), silent.code()} == {CODE.CANCELLED}
        assert wait_until(lambda: live_ids(stub) == {registered.instance_id}, timeout=5)
        assert_still_serving(placer, stub, registered)
    finally:
        release.set()
        quiet.cancel()
        silent.cancel()


def test_an_address_that_is_not_an_adapter_is_never_registered(placer, channels, adapters):
    docker = adapters(DOCKER, capacity=2)
    attacker = channels(placer.address, Role.ADAPTER)
    stub = placer_pb2_grpc.PlacerServiceStub(channels(placer.address))
    for address in (placer.address, "127.0.0.1:9"):  # a gRPC server of another kind; nothing
        impostor = report("not-an-adapter", address=address, capacity_total=50, capacity_free=50)
        refused = refusal(lambda: heartbeat(attacker, impostor))  # noqa: B023
        assert refused.code() == CODE.FAILED_PRECONDITION
        assert f"the advertised address {address} does not answer" in refused.details()
        assert live_ids(stub) == {docker.instance_id}
    answer = stub.Infer(
        placer_pb2.InferRequest(model=MODEL, payload=b"abc", content_type="image/png"), timeout=10
    )
    assert answer.served_instance_id == docker.instance_id and not answer.fell_back


def test_clients_that_send_their_requests_slowly_hold_no_thread(placer, stub, tokens, registered):
    # 160 connections, each an Infer of 64 KB arriving at 2 KB/s (half a minute), past the
    # placer's 64 unary calls and all its threads: health checks and other callers must not
    # wait for them.
    body = placer_pb2.InferRequest(model=MODEL, payload=b"\xff" * 65536, content_type="image/png")
    with ThrottlingProxy(placer.address) as proxy:
        slow_channels = [
            with_token(
                proxy.address, tokens.of(Role.CLIENT), [("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(160)
        ]
        connected = [grpc.channel_ready_future(c) for c in slow_channels]
        for ready in connected:  # every connection made (HTTP/2 settings exchanged) first
            ready.result(timeout=60)
        calls = [placer_pb2_grpc.PlacerServiceStub(c).Infer.future(body) for c in slow_channels]
        try:
            time.sleep(2)  # every connection is open and sending
            # More held than the placer has threads (64 unary + 64 stream + 4), whatever
            # became of a few connections on a loaded machine.
            ended = [call.exception() for call in calls if call.done()]
            assert len(calls) - len(ended) > 132, f"{len(ended)} ended early: {ended[:2]}"
            assert [health_status(placer.address) for _ in range(3)] == [1] * 3  # SERVING
            assert_still_serving(placer, stub, registered)
        finally:
            for call in calls:
                call.cancel()
            for channel in slow_channels:
                channel.close()

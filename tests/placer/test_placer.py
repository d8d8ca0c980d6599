"""The placer as a real process, driven by simulated adapters over real gRPC streams."""

import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from scripts.localstack import set_policy
from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.processes import health_status
from straightline_common.timeconv import duration, seconds
from straightline_inference.batching import BatchCeiling
from straightline_inference.simulated import SimulatedAdapter
from tests.placer.conftest import DOCKER, FLASK, SERVERLESS
from tests.support.waiting import wait_until

MODEL = types_pb2.ModelRef(name="demo")
SMALL, LARGE = 10_000, 1_000_000  # the default D is 256 KiB


def place(stub, size=SMALL, model=MODEL):
    return stub.Place(placer_pb2.PlaceRequest(model=model, data_size_bytes=size)).placement


def infer(stub, size=SMALL, timeout=10):
    request = placer_pb2.InferRequest(model=MODEL, payload=b"x" * size, content_type="image/jpeg")
    return stub.Infer(request, timeout=timeout)


def test_the_policys_batching_ceilings_reach_its_platforms_model_servers(stub, adapters):
    ceilings = types_pb2.BatchingLimits(max_batch_size=2, max_queue_delay=duration(0.001))
    docker_settings = placer_pb2.PlatformSettings(
        platform=DOCKER,
        memory_mb=2048,
        bandwidth_bytes_per_second=10**9,
        max_request_bytes=10**6,
        batching=ceilings,
    )
    policy = set_policy(stub, platform_settings=[docker_settings], pinned_platform=DOCKER)
    assert {s.platform: s.batching for s in policy.platform_settings}[DOCKER] == ceilings
    docker, flask = adapters(DOCKER), adapters(FLASK)
    infer(stub)
    assert docker.last_batching == BatchCeiling(max_batch_size=2, max_queue_delay_s=0.001)
    set_policy(stub, pinned_platform=FLASK)
    infer(stub)
    assert flask.served == 1 and flask.last_batching is None  # no ceilings for Flask


def test_health_and_reflection(placer, channels):
    service = "straightline.v1.PlacerService"
    assert health_status(placer.address) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(placer.address, service) == health_pb2.HealthCheckResponse.SERVING
    channel = channels(placer.address)
    v1alpha = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
    v1 = channel.stream_stream(  # the same messages on the wire, another service name
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        reflection_pb2.ServerReflectionRequest.SerializeToString,
        reflection_pb2.ServerReflectionResponse.FromString,
    )
    for reflect in (v1alpha, v1):
        listed, described = reflect(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="inference.GRPCInferenceService"
                    ),
                ]
            ),
            timeout=5,
        )
        names = {s.name for s in listed.list_services_response.service}
        assert {service, "inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
        assert "grpc.reflection.v1.ServerReflection" in names
        files = described.file_descriptor_response.file_descriptor_proto
        assert any(b"GRPCInferenceService" in f for f in files)


def test_placements_follow_algorithm_1_as_capacity_changes(stub, adapters):
    with pytest.raises(grpc.RpcError) as nothing:
        place(stub)
    assert nothing.value.code() == grpc.StatusCode.NOT_FOUND

    flask = adapters(FLASK, capacity=1, service_time_s=1.0)
    adapters(DOCKER, capacity=1)
    adapters(SERVERLESS, capacity=4)

    moderate = place(stub)
    assert (moderate.platform, moderate.branch) == (FLASK, types_pb2.BRANCH_FLASK_AVAILABLE)
    assert moderate.instance_id == flask.instance_id
    assert moderate.inputs.flask_available and moderate.inputs.flask_free_slots == 1

    large = place(stub, size=LARGE)
    assert (large.platform, large.branch) == (DOCKER, types_pb2.BRANCH_LARGE_DATA)

    at_d = place(stub, size=large.inputs.data_size_threshold_bytes)
    assert at_d.branch == types_pb2.BRANCH_FLASK_AVAILABLE

    # Flask busy: its only slot holds a request for a second, so S_F is empty.
    with futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(infer, stub)
        assert wait_until(lambda: flask.report().in_flight == 1)
        to_docker = place(stub)
        assert (to_docker.platform, to_docker.branch) == (
            DOCKER,
            types_pb2.BRANCH_DOCKER_AVAILABLE,
        )
        assert not to_docker.inputs.flask_available
        assert busy.result().served_platform == FLASK

    # A burst over F: small requests go to serverless.
    set_policy(stub, frequency_threshold_rps=0.5)
    hot = [place(stub) for _ in range(8)][-1]
    assert hot.inputs.request_frequency_rps > 0.5
    assert (hot.platform, hot.branch) == (SERVERLESS, types_pb2.BRANCH_HIGH_FREQUENCY_SMALL_DATA)
    assert place(stub, size=LARGE).branch == types_pb2.BRANCH_LARGE_DATA


def test_nothing_available_goes_to_serverless(stub, adapters):
    adapters(FLASK, capacity=0)
    adapters(DOCKER, capacity=0)
    adapters(SERVERLESS, capacity=2)
    placement = place(stub)
    assert (placement.platform, placement.branch) == (
        SERVERLESS,
        types_pb2.BRANCH_NOTHING_AVAILABLE,
    )


def test_the_capacity_aware_rule_keeps_hot_requests_off_a_full_serverless(stub, adapters):
    policy = set_policy(
        stub,
        placement_rule=types_pb2.PLACEMENT_RULE_CAPACITY_AWARE,
        frequency_threshold_rps=0.5,
    )
    assert policy.placement_rule == types_pb2.PLACEMENT_RULE_CAPACITY_AWARE
    adapters(FLASK, capacity=1)
    adapters(DOCKER, capacity=0)
    serverless = adapters(SERVERLESS, capacity=0)
    hot = [place(stub) for _ in range(8)][-1]
    assert hot.inputs.request_frequency_rps > 0.5 and hot.inputs.serverless_free_slots == 0
    assert (hot.platform, hot.branch) == (FLASK, types_pb2.BRANCH_FLASK_AVAILABLE)
    assert infer(stub).served_platform == FLASK and serverless.served == 0


def test_the_capacity_aware_rule_refuses_at_once_when_no_platform_has_room(stub, adapters):
    set_policy(stub, placement_rule=types_pb2.PLACEMENT_RULE_CAPACITY_AWARE)
    instances = [adapters(platform, capacity=0) for platform in (FLASK, DOCKER, SERVERLESS)]
    refused = place(stub)
    assert (refused.platform, refused.branch) == (
        types_pb2.PLATFORM_UNSPECIFIED,
        types_pb2.BRANCH_NO_CAPACITY,
    )
    assert refused.instance_id == ""
    with pytest.raises(grpc.RpcError) as exhausted:
        infer(stub)
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "model 'demo': no platform has a free slot now" in exhausted.value.details()
    assert "retry with backoff" in exhausted.value.details()
    assert [i.served + i.refused for i in instances] == [0, 0, 0]  # nothing was sent
    paper = set_policy(stub, placement_rule=types_pb2.PLACEMENT_RULE_UNSPECIFIED)
    assert paper.placement_rule == types_pb2.PLACEMENT_RULE_PAPER
    assert place(stub).branch == types_pb2.BRANCH_NOTHING_AVAILABLE


def test_the_latency_aware_rule_sends_hot_small_requests_to_the_fastest_free_platform(
    stub, adapters
):
    flask = adapters(FLASK, capacity=2, service_time_s=0.3)
    docker = adapters(DOCKER, capacity=2, service_time_s=0.02)
    adapters(SERVERLESS, capacity=4, service_time_s=0.1)
    set_policy(stub, frequency_threshold_rps=0.01)
    for platform in (FLASK, DOCKER, SERVERLESS):  # each serves once, then reports its latency
        set_policy(stub, pinned_platform=platform)
        infer(stub)
    set_policy(stub, pinned_platform=types_pb2.PLATFORM_UNSPECIFIED)
    paper = place(stub)
    assert paper.branch == types_pb2.BRANCH_HIGH_FREQUENCY_SMALL_DATA
    assert not paper.inputs.HasField("docker_recent_latency_p95")  # it compares no latencies
    set_policy(stub, placement_rule=types_pb2.PLACEMENT_RULE_LATENCY_AWARE)
    assert wait_until(lambda: place(stub).platform == DOCKER)  # once the heartbeats tell
    hot = place(stub)
    assert hot.branch == types_pb2.BRANCH_FASTEST_FREE
    latencies = [
        round(seconds(getattr(hot.inputs, f"{name}_recent_latency_p95")), 3)
        for name in ("flask", "docker", "serverless")
    ]
    # As the simulated platforms report them (a sleep of 20 ms can take 22 on a busy machine).
    assert latencies == pytest.approx([0.3, 0.02, 0.1], abs=0.01)
    assert place(stub, size=LARGE).branch == types_pb2.BRANCH_LARGE_DATA  # line 7, as before
    docker.stop()
    assert wait_until(lambda: place(stub).platform == SERVERLESS)  # the next fastest
    assert infer(stub).served_platform == SERVERLESS and flask.served == 1


def test_silent_instance_leaves_within_the_timeout(stub, adapters):
    flask = adapters(FLASK, capacity=2)
    adapters(DOCKER, capacity=2)
    assert place(stub).platform == FLASK
    flask.silence()
    silenced = time.monotonic()
    assert wait_until(lambda: place(stub).platform == DOCKER, timeout=3.0)
    # Timeout 1 s; heartbeats every 0.2 s, so the last one was at most 0.2 s before.
    assert time.monotonic() - silenced <= 1.0 + 0.3


def test_an_instance_that_says_it_leaves_leaves_at_once(stub, adapters):
    flask = adapters(FLASK, capacity=2)
    adapters(DOCKER, capacity=2)
    flask.stop()
    assert wait_until(lambda: place(stub).platform == DOCKER, timeout=0.5)


def test_a_burst_does_not_oversubscribe(stub, adapters):
    flask = adapters(FLASK, capacity=2, service_time_s=1.0)
    docker = adapters(DOCKER, capacity=2, service_time_s=1.0)
    serverless = adapters(SERVERLESS, capacity=20, service_time_s=1.0)
    together = threading.Barrier(12)  # a burst even when threads are slow to start

    def infer_together(_):
        together.wait(timeout=10)
        return infer(stub)

    with futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(infer_together, range(12)))
    served = [a.served_platform for a in answers]
    assert served.count(FLASK) == 2
    assert served.count(DOCKER) == 2
    assert served.count(SERVERLESS) == 8
    assert not any(a.fell_back for a in answers)
    assert flask.refused == docker.refused == serverless.refused == 0


def run_10_at_once(stub) -> list[tuple[object, float]]:
    """Ten Infer calls at once: what each ended with (the platform or a status code) and when."""

    def timed_infer(_):
        started = time.monotonic()
        try:
            return infer(stub).served_platform, time.monotonic() - started
        except grpc.RpcError as error:
            return error.code(), time.monotonic() - started

    with futures.ThreadPoolExecutor(10) as pool:
        return list(pool.map(timed_infer, range(10)))


def test_beyond_its_concurrent_rpcs_the_placer_refuses_at_once(start_placer, channels):
    placer = start_placer("--max-concurrent-rpcs", "4")  # streams have slots of their own
    stub = placer_pb2_grpc.PlacerServiceStub(channels(placer.address))
    flask = SimulatedAdapter(FLASK, placer.address, capacity=20, service_time_s=1.0).start()
    try:
        assert flask.wait_registered()
        outcomes = run_10_at_once(stub)
        served = [seconds for outcome, seconds in outcomes if outcome == FLASK]
        refused = [s for o, s in outcomes if o == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(served) == 4 and len(refused) == 6
        assert max(refused) < 0.5 < min(served)  # refused without waiting
        assert infer(stub).served_platform == FLASK  # and it goes on serving
    finally:
        flask.crash()


def test_inference_holds_no_worker_thread(start_placer, channels):
    placer = start_placer("--max-workers", "4")  # for the calls that are not inference
    stub = placer_pb2_grpc.PlacerServiceStub(channels(placer.address))
    flask = SimulatedAdapter(FLASK, placer.address, capacity=20, service_time_s=1.0).start()
    try:
        assert flask.wait_registered()
        outcomes = run_10_at_once(stub)
        assert [outcome for outcome, _ in outcomes] == [FLASK] * 10
        assert max(seconds for _, seconds in outcomes) < 1.9  # side by side, not 4 at a time
    finally:
        flask.crash()


def test_killed_instance_falls_back_in_the_papers_order(stub, adapters, otlp_receiver):
    flask = adapters(FLASK, capacity=2)
    docker = adapters(DOCKER, capacity=2)
    flask.crash()  # its last heartbeat keeps it in the view until the timeout
    answer = infer(stub)
    assert answer.placement.platform == FLASK
    assert answer.fell_back and answer.served_platform == DOCKER
    assert answer.served_instance_id == docker.instance_id
    first, second = answer.attempts
    assert (first.platform, first.status_code) == (FLASK, grpc.StatusCode.UNAVAILABLE.value[0])
    assert flask.instance_id in first.status_message
    assert (second.platform, second.status_code) == (DOCKER, 0)
    forwards = otlp_receiver.wait_for(
        lambda s: (
            s.name == "placer.forward"
            and s.attributes["straightline.instance_id"] in (flask.instance_id, docker.instance_id)
        ),
        count=2,
    )
    assert sorted(s.attributes["straightline.attempt"] for s in forwards) == [1, 2]
    infer_span = otlp_receiver.wait_for(
        lambda s: s.span_id == forwards[0].parent_span_id and s.name.endswith("/Infer")
    )[0]
    assert infer_span.attributes["straightline.fell_back"] is True
    assert infer_span.attributes["straightline.served_platform"] == "docker"


def test_the_callers_deadline_travels_to_the_adapter(stub, adapters):
    flask = adapters(FLASK, capacity=2, service_time_s=1.0)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as late:
        infer(stub, timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.9
    assert 0 < flask.last_time_remaining < 0.35  # gRPC rounds deadlines by a few ms
    infer(stub, timeout=5)
    assert 4 < flask.last_time_remaining < 5.05


def test_refusal_falls_back_and_exhaustion_everywhere_is_unavailable(stub, adapters):
    adapters(SERVERLESS, capacity=1, service_time_s=1.0)
    set_policy(stub, frequency_threshold_rps=0.001)
    with futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(infer, stub)
        time.sleep(0.3)
        # The placer counts the first request against the only slot; the instance would
        # refuse a second, and no other platform serves the model.
        with pytest.raises(grpc.RpcError) as refused:
            infer(stub)
        assert first.result().served_platform == SERVERLESS
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no platform could take request" in refused.value.details()
    assert "RESOURCE_EXHAUSTED" in refused.value.details()


def test_pinned_policy_sends_everything_to_one_platform(stub, adapters):
    adapters(FLASK, capacity=4)
    adapters(DOCKER, capacity=4)
    set_policy(stub, pinned_platform=DOCKER)
    placements = [place(stub, size) for size in (SMALL, LARGE)]
    assert {(p.platform, p.branch) for p in placements} == {(DOCKER, types_pb2.BRANCH_PINNED)}


def test_place_batch_decides_in_order(stub, adapters):
    adapters(FLASK, capacity=4)
    adapters(DOCKER, capacity=4)
    set_policy(stub, frequency_threshold_rps=0.25)
    sizes = [SMALL, LARGE, SMALL, SMALL, SMALL]
    batch = stub.PlaceBatch(
        placer_pb2.PlaceBatchRequest(
            requests=[
                placer_pb2.PlaceRequest(request_id=f"r{i}", model=MODEL, data_size_bytes=size)
                for i, size in enumerate(sizes)
            ]
        )
    )
    assert [p.request_id for p in batch.placements] == [f"r{i}" for i in range(5)]
    rates = [p.inputs.request_frequency_rps for p in batch.placements]
    assert rates == sorted(rates) and rates[0] < rates[-1]
    branches = [p.branch for p in batch.placements]
    # f_t = 0.1, 0.2, 0.3 ... against F = 0.25: the third small one is over it.
    assert branches == [
        types_pb2.BRANCH_FLASK_AVAILABLE,
        types_pb2.BRANCH_LARGE_DATA,
        types_pb2.BRANCH_HIGH_FREQUENCY_SMALL_DATA,
        types_pb2.BRANCH_HIGH_FREQUENCY_SMALL_DATA,
        types_pb2.BRANCH_HIGH_FREQUENCY_SMALL_DATA,
    ]


def test_placement_span_carries_every_input_and_the_trace_reaches_the_adapter(
    placer, stub, adapters, otlp_receiver, spans
):
    flask = adapters(FLASK, capacity=2)
    answer = infer(stub)
    placed = otlp_receiver.wait_for(
        lambda s: (
            s.name == "placer.place"
            and s.attributes.get("straightline.request_id") == answer.request_id
        )
    )
    assert placed, "no placement span reached the OTLP receiver"
    attributes = placed[0].attributes
    assert placed[0].service == "straightline-placer"
    assert attributes["straightline.platform"] == "flask"
    assert attributes["straightline.branch"] == "flask_available"
    assert attributes["straightline.instance_id"] == flask.instance_id
    assert attributes["straightline.r_d"] == SMALL
    assert attributes["straightline.flask_free_slots"] == 2
    assert "straightline.docker_free_slots" not in attributes  # no docker instance
    for key in (
        "straightline.f_t",
        "straightline.frequency_threshold",
        "straightline.size_threshold",
    ):
        assert key in attributes
    assert wait_until(lambda: f'"trace_id": "{placed[0].trace_id}"' in placer.log())
    forward = otlp_receiver.wait_for(
        lambda s: s.name == "placer.forward" and s.trace_id == placed[0].trace_id
    )[0]
    server = next(
        s
        for s in otlp_receiver.spans
        if s.trace_id == placed[0].trace_id and s.name.endswith("PlacerService/Infer")
    )
    assert placed[0].parent_span_id == forward.parent_span_id == server.span_id
    # The adapter (in this process) continued the same trace under the forward span.
    predict = [s for s in spans.get_finished_spans() if s.name.endswith("/Predict")]
    assert format(predict[-1].context.trace_id, "032x") == placed[0].trace_id
    assert format(predict[-1].parent.span_id, "016x") == forward.span_id


def test_watch_resources_streams_the_live_view(stub, adapters):
    watch = stub.WatchResources(
        placer_pb2.WatchResourcesRequest(min_interval=duration(0.05)), timeout=10
    )
    try:
        assert next(watch).instances == []
        flask = adapters(FLASK, capacity=3)
        view = next(v for v in watch if v.instances)
        assert view.instances[0].report.instance_id == flask.instance_id
        [platform] = view.platforms
        assert (platform.platform, platform.free_slots, platform.capacity_total) == (FLASK, 3, 3)
        assert view.flask_free_slots == 3  # deprecated, still filled
        flask.stop()
        gone = next(v for v in watch if not v.instances)
        assert (list(gone.platforms), gone.flask_free_slots) == ([], 0)
    finally:
        watch.cancel()


def test_metrics_count_placements_by_platform_and_branch(placer, stub, adapters):
    adapters(FLASK, capacity=2)
    for _ in range(3):
        place(stub)
    url = f"http://127.0.0.1:{placer.ports['metrics']}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    assert 'straightline_placements_total{branch="flask_available",platform="flask"} 3.0' in text
    assert "straightline_placement_decision_seconds_count 3.0" in text
    assert wait_until(
        lambda: (
            'straightline_live_instances{platform="flask"} 1.0'
            in urllib.request.urlopen(url, timeout=5).read().decode()
        )
    )


def test_sigterm_stops_gracefully(start_placer):
    process = start_placer()
    assert process.terminate(timeout=10) == 0
    assert "received SIGTERM" in process.log()


def test_a_stream_of_concurrent_heartbeats_and_placements_stays_consistent(stub, adapters):
    instances = [adapters(FLASK, capacity=1, heartbeat_interval_s=0.05) for _ in range(3)]
    set_policy(stub, frequency_threshold_rps=1e6)
    stop = threading.Event()
    errors = []

    def hammer():
        while not stop.is_set():
            try:
                place(stub)
            except grpc.RpcError as error:
                errors.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    chosen = {place(stub).instance_id for _ in range(3)}
    assert chosen and chosen <= {i.instance_id for i in instances}

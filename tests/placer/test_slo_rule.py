"""The SLO-aware rule through the real placer process and adapters that heartbeat to it."""

import re
import threading

import grpc

from scripts.localstack import set_policy
from straightline.v1 import placer_pb2, types_pb2
from straightline_common.timeconv import duration, seconds
from straightline_placer.calibration import errors_for
from tests.placer.conftest import FLASK, SERVERLESS
from tests.placer.test_placer import infer, place
from tests.support.waiting import wait_until

OBJECTIVE_S = 0.3
TARGET = 0.9
CALIBRATED = errors_for(TARGET)


def predicted_s(placement, platform) -> float | None:
    for state in placement.inputs.platforms:
        if state.platform == platform and state.HasField("predicted_latency"):
            return seconds(state.predicted_latency)
    return None


def predicted_ms(placement, platform) -> float | None:
    latency = predicted_s(placement, platform)
    return None if latency is None else round(latency * 1e3)


def slo_aware(stub):
    """Unpins the policy and places by the SLO-aware rule against a 300 ms objective, for 90%
    of requests (a platform is calibrated on `CALIBRATED` errors, not the 100 of 0.99)."""
    set_policy(
        stub,
        pinned_platform=types_pb2.PLATFORM_UNSPECIFIED,
        placement_rule=types_pb2.PLACEMENT_RULE_SLO_AWARE,
        default_latency_objective=duration(OBJECTIVE_S),
        slo_attainment_target=TARGET,
    )


def measured(stub, adapters):
    """Flask: 2 slots, 6 queue places, 100 ms a request; serverless: 8 environments, 150 ms.
    Each serves once, so that its heartbeats carry its service time."""
    adapters(FLASK, capacity=2, queue_limit=6, service_time_s=0.1)
    adapters(SERVERLESS, capacity=8, service_time_s=0.15)
    for platform in (FLASK, SERVERLESS):
        set_policy(stub, pinned_platform=platform)
        infer(stub)
    slo_aware(stub)
    # The service time measured, as the adapter times it: the simulated 150 ms and a little.
    assert wait_until(lambda: 150 <= (predicted_ms(place(stub), SERVERLESS) or 0) <= 160)


def test_idle_the_cheapest_platform_within_the_objective_serves(stub, adapters):
    measured(stub, adapters)
    placement = place(stub)
    assert (placement.platform, placement.branch) == (
        FLASK,
        types_pb2.BRANCH_CHEAPEST_WITHIN_OBJECTIVE,
    )
    assert 100 <= predicted_ms(placement, FLASK) <= 103
    assert round(seconds(placement.inputs.latency_objective) * 1e3) == OBJECTIVE_S * 1e3
    flask, serverless = placement.inputs.platforms
    assert 0 < flask.predicted_cost_usd < serverless.predicted_cost_usd


def test_a_burst_that_saturates_flask_moves_to_serverless_and_back(stub, adapters):
    measured(stub, adapters)
    # 14 at once: 2 run on Flask and its queue takes those still predicted within 300 ms
    # (100 ms each, drained two at a time); the rest go where the prediction is 150 ms.
    answers, errors = [], []
    start = threading.Barrier(14)

    def one():
        start.wait()
        try:
            answers.append(infer(stub))
        except grpc.RpcError as error:
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    served = [answer.served_platform for answer in answers]
    assert 2 <= served.count(FLASK) <= 8 and served.count(SERVERLESS) >= 6
    assert not any(answer.fell_back for answer in answers)
    moved = [a.placement for a in answers if a.served_platform == SERVERLESS]
    assert all(p.branch == types_pb2.BRANCH_CHEAPEST_WITHIN_OBJECTIVE for p in moved)
    assert all((predicted_s(p, FLASK) or OBJECTIVE_S + 1) > OBJECTIVE_S for p in moved)
    # Once Flask has drained and said so, requests go back to it: at once, or, if the burst
    # left it fewer errors than a margin needs, once copies have calibrated it.
    served_after = []
    while FLASK not in served_after and len(served_after) < 3 * CALIBRATED:
        served_after.append(infer(stub).served_platform)
    assert served_after[-1] == FLASK, f"requests never went back to Flask: {served_after}"


def test_a_deadline_no_platform_can_meet_is_refused_before_anything_is_sent(stub, adapters):
    measured(stub, adapters)
    request = placer_pb2.InferRequest(
        model=types_pb2.ModelRef(name="demo"), payload=b"x" * 100, content_type="image/jpeg"
    )
    try:
        stub.Infer(request, timeout=0.05)
        raise AssertionError("a 50 ms deadline was accepted against 100 ms predictions")
    except grpc.RpcError as refused:
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The simulated 100 and 150 ms, as the adapters time them (a little more).
        assert re.search(r"flask 10\d ms, serverless 15\d ms", refused.details())
    placement = stub.Place(
        placer_pb2.PlaceRequest(
            model=types_pb2.ModelRef(name="demo"), data_size_bytes=100, deadline=duration(0.05)
        )
    ).placement
    assert placement.branch == types_pb2.BRANCH_DEADLINE_UNMEETABLE
    assert placement.platform == types_pb2.PLATFORM_UNSPECIFIED


def test_a_requests_own_objective_overrides_the_policys(stub, adapters):
    measured(stub, adapters)
    placement = stub.Place(
        placer_pb2.PlaceRequest(
            model=types_pb2.ModelRef(name="demo"),
            data_size_bytes=100,
            latency_objective=duration(0.05),
        )
    ).placement
    # Nothing meets 50 ms: the fastest prediction wins.
    assert (placement.platform, placement.branch) == (
        FLASK,
        types_pb2.BRANCH_LOWEST_PREDICTED_LATENCY,
    )


def test_platforms_named_on_one_host_are_kept_and_predicted_alone_while_it_is_idle(stub, adapters):
    shared = [
        placer_pb2.PlatformSettings(
            platform=platform,
            memory_mb=2048,
            bandwidth_bytes_per_second=10**9,
            max_request_bytes=10**6,
            host="edge-1",
            host_cores=1,
        )
        for platform in (FLASK, SERVERLESS)
    ]
    policy = set_policy(stub, platform_settings=shared)
    kept = {s.platform: (s.host, s.host_cores) for s in policy.platform_settings}
    assert kept[FLASK] == kept[SERVERLESS] == ("edge-1", 1)
    assert kept[types_pb2.PLATFORM_DOCKER] == ("", 0)
    measured(stub, adapters)
    # Nothing runs on the host: one request on one core takes what it took alone.
    assert 100 <= predicted_ms(place(stub), FLASK) <= 103


def test_a_platform_not_measured_yet_is_measured_by_a_copy_not_by_a_users_request(stub, adapters):
    flask = adapters(FLASK, capacity=2, service_time_s=0.1)
    serverless = adapters(SERVERLESS, capacity=8, service_time_s=0.15)
    set_policy(stub, pinned_platform=FLASK)
    infer(stub)  # Flask measured; serverless never served
    slo_aware(stub)
    assert wait_until(lambda: (predicted_ms(place(stub), FLASK) or 0) >= 100)
    answer = infer(stub)
    assert answer.served_platform == FLASK and not answer.fell_back
    assert wait_until(lambda: serverless.served == 1)  # the copy, its answer dropped
    assert flask.served == 2
    # Its heartbeat now carries the copy's service time: serverless is measured.
    assert wait_until(lambda: 150 <= (predicted_ms(place(stub), SERVERLESS) or 0) <= 160)
    assert infer(stub).served_platform == FLASK and serverless.served == 1


def test_a_new_platform_takes_users_requests_only_once_copies_have_calibrated_it(stub, adapters):
    # Serverless serves alone long enough for its margin to rest on its errors; then Flask,
    # cheaper, comes up: it is measured, then calibrated, on copies, while serverless serves.
    adapters(SERVERLESS, capacity=8, service_time_s=0.15)
    set_policy(stub, pinned_platform=SERVERLESS)
    infer(stub)
    slo_aware(stub)
    assert wait_until(lambda: (predicted_ms(place(stub), SERVERLESS) or 0) >= 150)
    for _ in range(CALIBRATED):
        assert infer(stub).served_platform == SERVERLESS
    flask = adapters(FLASK, capacity=2, service_time_s=0.1)
    served_by = []
    while FLASK not in served_by and len(served_by) < 4 * CALIBRATED:
        served_by.append(infer(stub).served_platform)
    assert served_by[-1] == FLASK, f"Flask never took a user's request: {served_by}"
    copies = flask.served - 1
    assert copies >= CALIBRATED, f"Flask served users after {copies} copies"


def test_with_shedding_a_request_no_platform_meets_in_time_is_refused_and_sent_nowhere(
    stub, adapters
):
    measured(stub, adapters)
    set_policy(stub, shed_late_requests=True, default_latency_objective=duration(0.05))
    assert place(stub).branch == types_pb2.BRANCH_OBJECTIVE_UNMEETABLE
    try:
        infer(stub)
        raise AssertionError("a request predicted late was sent while the policy sheds them")
    except grpc.RpcError as refused:
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "latency objective of 50 ms" in refused.details()
        assert "the policy sheds late requests" in refused.details()
    set_policy(stub, default_latency_objective=duration(OBJECTIVE_S))
    assert infer(stub).served_platform == FLASK  # shedding only what would be late


def test_each_answer_calibrates_the_margin_of_its_platforms_predictions(stub, adapters):
    measured(stub, adapters)

    def margin_ms():
        state = next(s for s in place(stub).inputs.platforms if s.platform == FLASK)
        return seconds(state.prediction_margin) * 1e3

    assert margin_ms() == 0  # no answer under the SLO-aware rule yet
    for _ in range(3):
        assert infer(stub).served_platform == FLASK
    # Each answer took what was predicted (the simulated 100 ms) and the hops to the adapter
    # and back: a margin of a few milliseconds, never a negative one while errors are few.
    assert 0 < margin_ms() < 30

"""The placer's core in-process, with a fake forwarder in place of gRPC: placement under every
rule, fallback order, deadlines, and the reservation of slots."""

import asyncio

import pytest

from straightline_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from straightline_placer.algorithm import Branch, Platform, Rule
from straightline_placer.core import (
    AttemptTimedOut,
    Placer,
    PlatformExhausted,
    PlatformFailed,
    Request,
)
from straightline_placer.metrics import PlacerMetrics
from straightline_placer.policy import Policy
from straightline_placer.registry import InstanceStats

FLASK, DOCKER, SERVERLESS = Platform.FLASK, Platform.DOCKER, Platform.SERVERLESS


class FakeForwarder:
    """Answers with the instance's id, or raises what `refusals` holds for its platform;
    records each call and the free slots of its instance while the call runs."""

    def __init__(self):
        self.refusals: dict[Platform, Exception] = {}
        self.calls: list[tuple[Platform, float]] = []
        self.free_during_call: list[int] = []
        self.forgotten: list[str] = []
        self.request_ids: list[str] = []

    async def forward(self, instance, payload, timeout, request_id):
        self.calls.append((instance.platform, timeout))
        self.request_ids.append(request_id)
        self.free_during_call.append(instance.effective_free)
        if instance.platform in self.refusals:
            raise self.refusals[instance.platform]
        return f"answer from {instance.instance_id}"

    def forget(self, instance_id):
        self.forgotten.append(instance_id)


@pytest.fixture
def forwarder():
    return FakeForwarder()


def make_placer(forwarder, **policy):
    return Placer(Policy(**policy), forwarder, PlacerMetrics())


def heartbeat(placer, platform, *, free=2, total=2, **stats):
    placer.registry.report(
        instance_id=platform.name.lower(),
        platform=platform,
        address="127.0.0.1:1",
        capacity_total=total,
        capacity_free=free,
        models=[("m", "1")],
        report=None,
        owner=platform,
        stats=InstanceStats(**stats),
    )


def infer(placer, request, payload, timeout):
    return asyncio.run(placer.infer(request, payload, timeout))


def request(size=1000, objective=None, deadline=None):
    return Request("", "m", "", size, objective, deadline)


def all_platforms(placer, **stats):
    for platform in Platform:
        heartbeat(placer, platform, **stats)


def test_infer_sends_to_the_placed_instance_and_gives_its_slot_back(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    result = infer(placer, request(), payload=b"x", timeout=5)
    assert (result.answer, result.served_platform, result.fell_back) == (
        "answer from flask",
        FLASK,
        False,
    )
    assert result.placement.branch == Branch.FLASK_AVAILABLE
    assert forwarder.free_during_call == [1]  # the slot was reserved while the call ran
    assert placer.registry.live()[0].effective_free == 2  # and given back after


def test_a_refusal_falls_back_along_the_order_of_preference(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    forwarder.refusals[FLASK] = PlatformExhausted("flask is full")
    result = infer(placer, request(), payload=b"x", timeout=5)
    assert [platform for platform, _ in forwarder.calls] == [FLASK, DOCKER]
    assert (result.served_platform, result.fell_back) == (DOCKER, True)
    assert [a.error is None for a in result.attempts] == [False, True]


def test_a_refusal_falls_back_into_the_queue_of_a_platform_without_a_free_slot(forwarder):
    placer = make_placer(forwarder)
    heartbeat(placer, FLASK)
    heartbeat(placer, DOCKER, free=0, queue_limit=4)  # busy, with room in its queue
    heartbeat(placer, SERVERLESS, free=0)  # busy, no queue (Lambda's concurrency)
    forwarder.refusals[FLASK] = PlatformExhausted("flask is full")
    result = infer(placer, request(), payload=b"x", timeout=5)
    assert [platform for platform, _ in forwarder.calls] == [FLASK, DOCKER]
    assert (result.served_platform, result.fell_back) == (DOCKER, True)


def test_the_adapter_gets_the_request_id_the_placement_reports(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    result = infer(placer, request(), payload=b"x", timeout=5)  # the client gave no id
    assert result.placement.request_id and forwarder.request_ids == [result.placement.request_id]


def test_a_failed_instance_costs_one_attempt_and_is_then_left_out(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    forwarder.refusals[FLASK] = PlatformFailed("flask instance flask refused (UNAVAILABLE)")
    first = infer(placer, request(), payload=b"x", timeout=5)
    assert (first.served_platform, first.fell_back) == (DOCKER, True)
    second = infer(placer, request(), payload=b"x", timeout=5)
    assert second.placement.platform == DOCKER  # Flask is ejected: Algorithm 1 sees S_F empty
    assert [platform for platform, _ in forwarder.calls] == [FLASK, DOCKER, DOCKER]


def test_an_attempt_that_may_fall_back_gets_half_the_time_left(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    forwarder.refusals[FLASK] = PlatformFailed("flask instance flask did not answer")
    infer(placer, request(), payload=b"x", timeout=10)
    (_, flask_budget), (_, docker_budget) = forwarder.calls
    assert flask_budget == pytest.approx(5, abs=0.1)
    assert docker_budget == pytest.approx(5, abs=0.1)  # half of what was left
    pinned_forwarder = FakeForwarder()
    pinned = make_placer(pinned_forwarder, pinned_platform=FLASK)
    all_platforms(pinned)
    infer(pinned, request(), payload=b"x", timeout=10)
    assert pinned_forwarder.calls[0][1] == pytest.approx(10, abs=0.1)


def test_a_timeout_at_the_callers_own_deadline_ejects_no_instance(forwarder):
    placer = make_placer(forwarder, pinned_platform=FLASK)  # no fallback: all the time is its
    all_platforms(placer)
    forwarder.refusals[FLASK] = AttemptTimedOut("flask instance flask did not answer")
    with pytest.raises(DeadlineExceeded, match="did not answer before the request's deadline"):
        infer(placer, request(), payload=b"x", timeout=0.3)
    assert all(i.ejected_until == 0 for i in placer.registry.live())
    assert placer.registry.live()[0].effective_free == 2  # its slot given back


def test_fallback_wraps_around_from_a_later_platform(forwarder):
    placer = make_placer(forwarder, preference_order=(DOCKER, SERVERLESS, FLASK))
    all_platforms(placer)
    forwarder.refusals[DOCKER] = PlatformExhausted("docker is full")
    forwarder.refusals[SERVERLESS] = PlatformExhausted("throttled")
    result = infer(placer, request(size=10**6), payload=b"x", timeout=5)  # r_d > D: docker
    assert [platform for platform, _ in forwarder.calls] == [DOCKER, SERVERLESS, FLASK]
    assert result.served_platform == FLASK


def test_a_request_too_large_for_a_platform_does_not_fall_back_there(forwarder):
    placer = make_placer(forwarder)
    heartbeat(placer, DOCKER)
    heartbeat(placer, SERVERLESS)
    forwarder.refusals[DOCKER] = PlatformExhausted("docker is full")
    with pytest.raises(Unavailable, match="no platform could take request"):
        infer(placer, request(size=7 * 1024 * 1024), payload=b"x", timeout=5)
    assert [platform for platform, _ in forwarder.calls] == [DOCKER]


def test_without_fallback_a_refusal_is_the_answer(forwarder):
    placer = make_placer(forwarder, fallback_enabled=False)
    all_platforms(placer)
    forwarder.refusals[FLASK] = PlatformExhausted("flask is full")
    with pytest.raises(Unavailable, match="flask is full"):
        infer(placer, request(), payload=b"x", timeout=5)
    assert len(forwarder.calls) == 1


def test_a_pinned_platform_never_falls_back(forwarder):
    placer = make_placer(forwarder, pinned_platform=SERVERLESS)
    all_platforms(placer)
    forwarder.refusals[SERVERLESS] = PlatformExhausted("throttled")
    with pytest.raises(Unavailable):
        infer(placer, request(), payload=b"x", timeout=5)
    assert [platform for platform, _ in forwarder.calls] == [SERVERLESS]


def test_other_errors_of_the_platform_are_not_retried(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    forwarder.refusals[FLASK] = InvalidArgument("not an image")
    with pytest.raises(InvalidArgument, match="not an image"):
        infer(placer, request(), payload=b"x", timeout=5)
    assert len(forwarder.calls) == 1
    assert placer.registry.live()[0].effective_free == 2  # the slot came back all the same


def test_the_forwarded_timeout_is_what_remains_of_the_deadline(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    infer(placer, request(), payload=b"x", timeout=0.5)
    assert 0.4 < forwarder.calls[0][1] <= 0.5


def test_a_deadline_already_past_sends_nothing(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    with pytest.raises(DeadlineExceeded):
        infer(placer, request(), payload=b"x", timeout=-1)
    assert forwarder.calls == []
    assert placer.registry.live()[0].effective_free == 2


def test_an_unserved_model_is_not_found(forwarder):
    placer = make_placer(forwarder)
    with pytest.raises(NotFound):
        infer(placer, request(), payload=b"x", timeout=5)


@pytest.mark.parametrize(
    ("rule", "platform", "branch"),
    [
        (Rule.PAPER, SERVERLESS, Branch.HIGH_FREQUENCY_SMALL_DATA),
        (Rule.CAPACITY_AWARE, FLASK, Branch.FLASK_AVAILABLE),  # serverless is full
        (Rule.LATENCY_AWARE, DOCKER, Branch.FASTEST_FREE),
        (Rule.SLO_AWARE, DOCKER, Branch.CHEAPEST_WITHIN_OBJECTIVE),
    ],
)
def test_every_rule_places_through_the_core(forwarder, rule, platform, branch):
    placer = make_placer(forwarder, placement_rule=rule, frequency_threshold_rps=1.0)
    heartbeat(placer, FLASK, recent_latency_p95_s=0.3, recent_latency_p50_s=0.2)
    heartbeat(placer, DOCKER, recent_latency_p95_s=0.02, recent_latency_p50_s=0.01)
    heartbeat(placer, SERVERLESS, free=0)
    for _ in range(20):  # f_t over F
        placement = placer.place(request())
    assert (placement.platform, placement.branch) == (platform, branch)
    predicted = [s.predicted_latency_s for s in placement.inputs.platforms.values()]
    assert (predicted != [None] * 3) == (rule == Rule.SLO_AWARE)


def test_the_slo_rule_refuses_at_once_what_no_platform_can_answer_in_time(forwarder):
    placer = make_placer(forwarder, placement_rule=Rule.SLO_AWARE)
    heartbeat(placer, FLASK, recent_latency_p50_s=0.4)
    with pytest.raises(ResourceExhausted, match="within the request's deadline of 100 ms"):
        infer(placer, request(deadline=0.1), payload=b"x", timeout=0.1)
    assert forwarder.calls == []
    assert placer.registry.live()[0].effective_free == 2


def test_only_answers_to_real_predictions_calibrate_a_platform(forwarder):
    placer = make_placer(forwarder, placement_rule=Rule.SLO_AWARE)
    heartbeat(placer, FLASK)  # nothing measured: predicted at no service time
    [flask] = placer.registry.live()
    infer(placer, request(), payload=b"x", timeout=5)
    assert flask.prediction_errors.margin_s(0.99) == 0.0  # that answer's error says nothing
    heartbeat(placer, FLASK, recent_latency_p50_s=0.001, recent_latency_p95_s=0.001)
    infer(placer, request(), payload=b"x", timeout=5)  # predicted at 1 ms, answered at once
    assert -0.002 < flask.prediction_errors.margin_s(0.99) <= 0.0


def test_a_requests_own_objective_beats_the_models(forwarder):
    placer = make_placer(forwarder, placement_rule=Rule.SLO_AWARE, latency_objectives={"m": 0.05})
    heartbeat(placer, FLASK, recent_latency_p50_s=0.1)
    assert placer.place(request()).inputs.latency_objective_s == 0.05
    assert placer.place(request(objective=2.0)).inputs.latency_objective_s == 2.0


def test_a_policy_change_applies_to_the_next_request(forwarder):
    placer = make_placer(forwarder)
    all_platforms(placer)
    placer.update_policy(pinned_platform=DOCKER)
    assert placer.place(request()).platform == DOCKER
    with pytest.raises(InvalidArgument):
        placer.update_policy(frequency_threshold_rps=-1)
    assert placer.policy.pinned_platform == DOCKER


def test_expired_instances_are_forgotten_by_the_forwarder(forwarder):
    placer = make_placer(forwarder, heartbeat_timeout_s=0.1)
    heartbeat(placer, FLASK)
    placer.registry.heartbeat_timeout = 0.0
    placer.expire_instances()
    assert forwarder.forgotten == ["flask"]

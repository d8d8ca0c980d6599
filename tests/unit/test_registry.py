import pytest

from straightline_common.errors import AlreadyExists, NotFound
from straightline_placer.algorithm import Platform
from straightline_placer.registry import InstanceRegistry
from tests.unit.test_frequency import FakeClock


class Choice:
    def __init__(self, platform):
        self.platform = platform


def report(registry, instance_id, platform, *, free=2, total=2, owner=None, models=("m",), p95=0.0):
    return registry.report(
        instance_id=instance_id,
        platform=platform,
        address="127.0.0.1:1",
        capacity_total=total,
        capacity_free=free,
        models=[(name, "1") for name in models],
        report=None,
        owner=owner if owner is not None else instance_id,
        recent_latency_p95_s=p95,
    )


def choose(platform):
    return lambda free, best: Choice(platform)


def survey(registry, model="m"):
    """What `decide` shows its chooser: (free slots, recent p95) of flask, docker, serverless."""
    captured = {}

    def capture(free, best):
        latency = (None if i is None else i.recent_latency_p95_s for i in best[1:])
        captured["survey"] = tuple(free[1:]), tuple(latency)
        return Choice(Platform.FLASK)

    registry.decide(model, "", capture, reserve=False)
    return captured["survey"]


def free_slots(registry, model="m"):
    return survey(registry, model)[0]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(clock):
    return InstanceRegistry(heartbeat_timeout=3.0, clock=clock)


def test_free_slots_per_platform_for_the_model(registry):
    report(registry, "f1", Platform.FLASK, free=3, total=4)
    report(registry, "f2", Platform.FLASK, free=1)
    report(registry, "d1", Platform.DOCKER, free=2)
    report(registry, "s1", Platform.SERVERLESS, free=4, total=4)
    report(registry, "other", Platform.FLASK, free=9, total=9, models=("other",))
    assert free_slots(registry) == (4, 2, 4)


def test_the_latency_shown_is_that_of_the_instance_a_request_would_go_to(registry):
    report(registry, "d1", Platform.DOCKER, free=1, p95=0.05)
    report(registry, "d2", Platform.DOCKER, free=3, total=4, p95=0.2)
    report(registry, "s1", Platform.SERVERLESS, free=0, p95=0.1)
    assert survey(registry) == ((0, 4, 0), (None, 0.2, 0.1))


def test_a_refusal_chooses_no_instance(registry):
    report(registry, "f1", Platform.FLASK, free=0)
    choice, instance, ticket = registry.decide("m", "", choose(None), reserve=True)
    assert choice.platform is None and instance is None and ticket is None


def test_instance_leaves_after_the_timeout(registry, clock):
    report(registry, "f1", Platform.FLASK)
    report(registry, "d1", Platform.DOCKER)
    clock.now += 2.0
    report(registry, "d1", Platform.DOCKER)
    clock.now += 1.5  # f1 silent for 3.5 s > 3 s, d1 for 1.5 s
    assert free_slots(registry) == (0, 2, 0)
    departures = registry.expire()
    assert [d.instance_id for d in departures] == ["f1"]
    assert [i.instance_id for i in registry.live()] == ["d1"]


def test_unknown_model_is_not_found(registry):
    report(registry, "f1", Platform.FLASK)
    with pytest.raises(NotFound, match="no live instance serves model 'nope'"):
        registry.decide("nope", "", choose(Platform.FLASK), reserve=False)
    with pytest.raises(NotFound, match="version '2'"):
        registry.decide("m", "2", choose(Platform.FLASK), reserve=False)


def test_reservations_prevent_oversubscription_between_heartbeats(registry):
    report(registry, "f1", Platform.FLASK, free=2)
    _, first, _ = registry.decide("m", "", choose(Platform.FLASK), reserve=True)
    _, second, _ = registry.decide("m", "", choose(Platform.FLASK), reserve=True)
    assert first is second
    assert free_slots(registry) == (0, 0, 0)


def test_finished_requests_free_their_slot(registry):
    report(registry, "f1", Platform.FLASK, free=1, total=1)
    _, _, ticket = registry.decide("m", "", choose(Platform.FLASK), reserve=True)
    assert free_slots(registry) == (0, 0, 0)
    registry.finish(ticket)
    assert free_slots(registry) == (1, 0, 0)


def test_a_report_replaces_the_count_and_late_finishes_are_credited(registry):
    report(registry, "f1", Platform.FLASK, free=2)
    _, _, ticket = registry.decide("m", "", choose(Platform.FLASK), reserve=True)
    report(registry, "f1", Platform.FLASK, free=1)  # the adapter counts it in flight
    assert free_slots(registry) == (1, 0, 0)
    registry.finish(ticket)  # sent before the report, finished after it
    assert free_slots(registry) == (2, 0, 0)


def test_the_instance_with_most_free_capacity_is_chosen(registry):
    report(registry, "d1", Platform.DOCKER, free=1, total=4)
    report(registry, "d2", Platform.DOCKER, free=3, total=4)
    _, instance, _ = registry.decide("m", "", choose(Platform.DOCKER), reserve=True)
    assert instance.instance_id == "d2"


def test_reserve_with_capacity_skips_full_platforms(registry):
    report(registry, "s1", Platform.SERVERLESS, free=0)
    assert registry.reserve_with_capacity(Platform.SERVERLESS, "m", "") is None
    report(registry, "s1", Platform.SERVERLESS, free=1)
    assert registry.reserve_with_capacity(Platform.SERVERLESS, "m", "").instance.instance_id == "s1"


def test_duplicate_instance_id_on_another_open_stream_is_refused(registry):
    report(registry, "f1", Platform.FLASK, owner="stream-a")
    with pytest.raises(AlreadyExists, match="'f1' is already reporting"):
        report(registry, "f1", Platform.FLASK, owner="stream-b")
    assert [i.owner for i in registry.live()] == ["stream-a"]


def test_a_reconnecting_instance_takes_over_its_closed_stream(registry):
    report(registry, "f1", Platform.FLASK, owner="stream-a")
    registry.stream_closed("f1", "stream-a")
    assert [i.instance_id for i in registry.live()] == ["f1"]  # still live until the timeout
    report(registry, "f1", Platform.FLASK, owner="stream-b")
    assert [i.owner for i in registry.live()] == ["stream-b"]


def test_leaving_removes_at_once_but_only_from_its_own_stream(registry):
    report(registry, "f1", Platform.FLASK, owner="stream-a")
    registry.leave("f1", "stream-b")
    assert [i.instance_id for i in registry.live()] == ["f1"]
    registry.leave("f1", "stream-a")
    assert registry.live() == []


def test_wait_for_change_returns_on_a_report(registry):
    seen = registry.version
    report(registry, "f1", Platform.FLASK)
    assert registry.wait_for_change(seen, timeout=0.01) != seen

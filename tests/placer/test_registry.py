import threading
import time

import pytest

from straightline_common.errors import AlreadyExists, NotFound
from straightline_placer.algorithm import Platform
from straightline_placer.registry import InstanceRegistry, InstanceStats
from tests.placer.test_frequency import FakeClock


class Choice:
    def __init__(self, platform):
        self.platform = platform


ORDER = (Platform.FLASK, Platform.DOCKER, Platform.SERVERLESS)  # the paper's three


def report(registry, instance_id, platform, *, free=2, total=2, owner=None, models=("m",), **stats):
    return registry.report(
        instance_id=instance_id,
        platform=platform,
        address="127.0.0.1:1",
        capacity_total=total,
        capacity_free=free,
        models=[(name, "1") for name in models],
        report=None,
        owner=owner if owner is not None else instance_id,
        stats=InstanceStats(**stats),
    )


def choose(platform):
    return lambda platforms: Choice(platform)


def decide(registry, chooser, model="m", version="", reserve=True):
    return registry.decide(model, version, chooser, ORDER, reserve=reserve)


def survey(registry, model="m"):
    """What `decide` shows its chooser: the platforms with a live instance, by platform."""
    captured = {}

    def capture(platforms):
        captured["survey"] = platforms
        return Choice(Platform.FLASK)

    decide(registry, capture, model, reserve=False)
    return captured["survey"]


def free_slots(registry, model="m"):
    """Free slots of flask, docker, serverless."""
    platforms = survey(registry, model)
    return tuple(platforms[p].free_slots if p in platforms else 0 for p in ORDER)


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
    report(registry, "d1", Platform.DOCKER, free=1, recent_latency_p95_s=0.05)
    report(registry, "d2", Platform.DOCKER, free=3, total=4, recent_latency_p95_s=0.2)
    report(registry, "s1", Platform.SERVERLESS, free=0, recent_latency_p95_s=0.1)
    platforms = survey(registry)
    assert list(platforms) == [Platform.DOCKER, Platform.SERVERLESS]
    assert platforms[Platform.DOCKER].instance.instance_id == "d2"
    assert platforms[Platform.DOCKER].recent_latency_p95_s == 0.2
    assert platforms[Platform.SERVERLESS].recent_latency_p95_s == 0.1


def test_a_platform_sums_queues_and_warm_slots_over_its_instances(registry):
    # d1: 4 slots, 2 warm of which 1 busy, 3 free (1 warm); d2: 2 slots, none warm, 2 free.
    report(
        registry,
        "d1",
        Platform.DOCKER,
        free=3,
        total=4,
        in_flight=1,
        warm_environments=1,
        warm_slots=2,
        queue_depth=1,
        queue_limit=4,
    )
    report(registry, "d2", Platform.DOCKER, free=2, total=2, queue_limit=2)
    docker = survey(registry)[Platform.DOCKER]
    assert (docker.free_slots, docker.capacity_total, docker.in_flight) == (5, 6, 1)
    assert (docker.warm_environments, docker.warm_free_slots) == (1, 1)
    assert (docker.queue_depth, docker.queue_room) == (1, 5)


def test_platforms_are_listed_in_the_order_asked_for(registry):
    for instance_id, platform in (("s1", Platform.SERVERLESS), ("f1", Platform.FLASK)):
        report(registry, instance_id, platform)
    order = (Platform.SERVERLESS, Platform.DOCKER, Platform.FLASK)
    captured = []
    registry.decide(
        "m", "", lambda p: captured.append(list(p)) or Choice(None), order, reserve=False
    )
    assert captured == [[Platform.SERVERLESS, Platform.FLASK]]


def test_a_refusal_chooses_no_instance(registry):
    report(registry, "f1", Platform.FLASK, free=0)
    choice, instance, ticket = decide(registry, choose(None))
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
        decide(registry, choose(Platform.FLASK), "nope", reserve=False)
    with pytest.raises(NotFound, match="version '2'"):
        decide(registry, choose(Platform.FLASK), version="2", reserve=False)


def test_reservations_prevent_oversubscription_between_heartbeats(registry):
    report(registry, "f1", Platform.FLASK, free=2)
    _, first, _ = decide(registry, choose(Platform.FLASK))
    _, second, _ = decide(registry, choose(Platform.FLASK))
    assert first is second
    assert free_slots(registry) == (0, 0, 0)


def test_finished_requests_free_their_slot(registry):
    report(registry, "f1", Platform.FLASK, free=1, total=1)
    _, _, ticket = decide(registry, choose(Platform.FLASK))
    assert free_slots(registry) == (0, 0, 0)
    registry.finish(ticket, ran=True)
    assert free_slots(registry) == (1, 0, 0)


def test_a_report_replaces_the_count_and_late_finishes_are_credited(registry):
    report(registry, "f1", Platform.FLASK, free=2)
    _, _, ticket = decide(registry, choose(Platform.FLASK))
    report(registry, "f1", Platform.FLASK, free=1)  # the adapter counts it in flight
    assert free_slots(registry) == (1, 0, 0)
    registry.finish(ticket, ran=True)  # sent before the report, finished after it
    assert free_slots(registry) == (2, 0, 0)


def test_a_refusal_that_returns_after_a_report_frees_no_slot(registry):
    # Issue 16's "phantom slot": sent with the only slot busy, refused, and the refusal
    # arrives after a report that still shows the slot busy: still no free slot.
    report(registry, "f1", Platform.FLASK, free=1, total=1)
    _, _, running = decide(registry, choose(Platform.FLASK))
    _, _, refused = decide(registry, choose(Platform.FLASK))
    report(registry, "f1", Platform.FLASK, free=0, total=1)
    registry.finish(refused, ran=False)
    assert free_slots(registry) == (0, 0, 0)
    registry.finish(running, ran=True)
    assert free_slots(registry) == (1, 0, 0)


def test_a_failed_instance_is_ejected_for_a_doubling_interval_unless_it_is_the_last(clock):
    registry = InstanceRegistry(heartbeat_timeout=1000.0, clock=clock)
    report(registry, "f1", Platform.FLASK, free=2)
    report(registry, "f2", Platform.FLASK, free=1)
    failing = survey(registry)[Platform.FLASK].instance
    assert failing.instance_id == "f1"
    assert registry.record_failure(failing) == 1.0
    assert survey(registry)[Platform.FLASK].instance.instance_id == "f2"
    clock.now += 1.01
    assert survey(registry)[Platform.FLASK].instance.instance_id == "f1"  # back on probation
    assert registry.record_failure(failing) == 2.0
    clock.now += 1.5
    assert survey(registry)[Platform.FLASK].free_slots == 1  # f2 alone
    registry.record_success(failing)
    assert registry.record_failure(failing) == 1.0  # a success ends the run of failures
    other = survey(registry)[Platform.FLASK].instance
    registry.record_failure(other)
    assert survey(registry)[Platform.FLASK].free_slots == 3  # all ejected: all considered


def test_the_instance_with_most_free_capacity_is_chosen(registry):
    report(registry, "d1", Platform.DOCKER, free=1, total=4)
    report(registry, "d2", Platform.DOCKER, free=3, total=4)
    _, instance, _ = decide(registry, choose(Platform.DOCKER))
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


def test_every_change_of_the_view_moves_its_version(registry):
    seen = registry.version
    report(registry, "f1", Platform.FLASK)
    assert registry.version > seen
    seen = registry.version
    registry.leave("f1", "f1")
    assert registry.version > seen


def test_requests_sent_beyond_the_free_slots_count_as_queued(registry):
    report(registry, "f1", Platform.FLASK, free=1, total=1, queue_limit=3)
    for _ in range(3):
        decide(registry, choose(Platform.FLASK))
    flask = survey(registry)[Platform.FLASK]
    assert (flask.free_slots, flask.queue_depth, flask.queue_room) == (0, 2, 1)


def test_with_no_free_slot_a_request_would_go_to_the_shortest_queue(registry):
    report(registry, "d1", Platform.DOCKER, free=0, queue_depth=3, queue_limit=4)
    report(registry, "d2", Platform.DOCKER, free=0, queue_depth=1, queue_limit=4)
    report(registry, "d3", Platform.DOCKER, free=0, queue_depth=4, queue_limit=4)
    docker = survey(registry)[Platform.DOCKER]
    assert docker.instance.instance_id == "d2"
    assert (docker.instance_queued, docker.instance_queue_room, docker.queue_room) == (1, 3, 4)


def test_a_slot_that_frees_up_goes_to_the_reported_queue_first(registry):
    report(registry, "f1", Platform.FLASK, free=0, total=2, queue_depth=2, queue_limit=4)
    before = [decide(registry, choose(Platform.FLASK))[2] for _ in range(3)]
    report(registry, "f1", Platform.FLASK, free=0, total=2, queue_depth=2, queue_limit=4)
    assert free_slots(registry) == (0, 0, 0)
    for ticket in before[:2]:  # two finish: the two that were waiting take their slots
        registry.finish(ticket, ran=True)
    flask = survey(registry)[Platform.FLASK]
    assert (flask.free_slots, flask.queue_depth) == (0, 0)
    registry.finish(before[2], ran=True)  # the third frees a slot nobody waits for
    assert free_slots(registry) == (1, 0, 0)


def test_while_the_view_gathers_a_request_waits_for_its_model_to_appear(clock):
    """A restarted placer: the adapters' heartbeats arrive over its first heartbeat timeout; a
    request for a model no instance serves yet waits for one, then is refused as unknown."""
    registry = InstanceRegistry(heartbeat_timeout=3.0, clock=clock, gathering_s=0.5)
    later = threading.Timer(0.1, lambda: report(registry, "f1", Platform.FLASK))
    later.start()
    try:
        choice, instance, _ticket = decide(registry, choose(Platform.FLASK))
    finally:
        later.join()
    assert (choice.platform, instance.instance_id) == (Platform.FLASK, "f1")
    with pytest.raises(NotFound):
        decide(registry, choose(Platform.FLASK), "nope")
    started = time.monotonic()
    with pytest.raises(NotFound):  # gathered: refused at once
        decide(registry, choose(Platform.FLASK), "nope")
    assert time.monotonic() - started < 0.3

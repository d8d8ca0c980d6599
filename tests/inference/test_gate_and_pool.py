import itertools
import threading
import time
from concurrent import futures

import pytest

from straightline_common.errors import DeadlineExceeded, ResourceExhausted
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.pool import EnvironmentPool
from tests.support.waiting import wait_until


def hold(gate_or_pool, release=None, *, lease=False, timeout=5.0):
    """Take a slot (or a lease) and keep it until `release` is set; at once without one."""
    context = gate_or_pool.lease(timeout) if lease else gate_or_pool.slot(timeout)
    with context as got:
        if release is not None:
            assert release.wait(10), "the test never released its holders"
        return got


def release_after(release, seconds):
    """Let holders go once they have been seen in place, after long enough to tell waiters apart."""
    time.sleep(seconds)
    release.set()


def test_gate_runs_capacity_at_once_queues_then_refuses():
    gate, release = SlotGate(capacity=2, queue_limit=1), threading.Event()
    with futures.ThreadPoolExecutor(4) as pool:
        running = [pool.submit(hold, gate, release) for _ in range(2)]
        assert wait_until(lambda: gate.in_flight == 2)
        queued = pool.submit(hold, gate)
        assert wait_until(lambda: gate.waiting == 1)
        assert (gate.in_flight, gate.waiting, gate.free) == (2, 1, 0)
        with pytest.raises(ResourceExhausted, match="queue \\(1\\) is full"):
            hold(gate)
        release_after(release, 0.2)
        assert queued.result() > 0.1  # it waited for a slot
        assert [r.result() for r in running] == [0.0, 0.0]
    assert (gate.in_flight, gate.waiting) == (0, 0)


def test_gate_wait_is_bounded_by_the_timeout():
    gate, release = SlotGate(capacity=1, queue_limit=5), threading.Event()
    with futures.ThreadPoolExecutor(1) as pool:
        pool.submit(hold, gate, release)
        assert wait_until(lambda: gate.in_flight == 1)
        with pytest.raises(DeadlineExceeded):
            hold(gate, timeout=0.1)
        release.set()
    assert gate.waiting == 0


class Environments:
    """Environments that take a while to start, recording what happened to them."""

    def __init__(self, start_seconds=0.2):
        self.start_seconds = start_seconds
        self.started, self.stopped = [], []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self):
        time.sleep(self.start_seconds)
        with self._lock:
            environment = f"env-{next(self._ids)}"
            self.started.append(environment)
        return environment

    def stop(self, environment):
        self.stopped.append(environment)


def make_pool(environments, **options):
    defaults = {"max_environments": 2, "slots_per_environment": 1, "idle_timeout_s": 60}
    return EnvironmentPool(environments.start, environments.stop, **{**defaults, **options})


def test_cold_start_then_warm_reuse():
    environments = Environments()
    pool = make_pool(environments)
    try:
        first = hold(pool, lease=True)
        second = hold(pool, lease=True)
        assert first.cold_start_seconds >= 0.2 and second.cold_start_seconds == 0
        assert first.environment == second.environment == "env-1"
        assert len(pool.environments()) == 1
    finally:
        pool.close()
    assert environments.stopped == ["env-1"]


def test_scales_to_the_limit_then_throttles_without_a_queue():
    environments = Environments()
    pool, release = make_pool(environments, max_environments=2, queue_limit=0), threading.Event()
    try:
        with futures.ThreadPoolExecutor(2) as workers:
            busy = [workers.submit(hold, pool, release, lease=True) for _ in range(2)]
            assert wait_until(lambda: pool.capacity().in_flight == 2)
            with pytest.raises(ResourceExhausted, match="at its limit \\(2 environments"):
                hold(pool, lease=True)
            release.set()
            assert {b.result().environment for b in busy} == {"env-1", "env-2"}
        capacity = pool.capacity()
        assert (capacity.total, capacity.free, capacity.in_flight) == (2, 2, 0)
    finally:
        pool.close()


def test_slots_per_environment_and_queue():
    # Requests that arrive while the environment starts wait for its free slots; only those
    # beyond its slots count against the queue (a burst on a cold pool is not refused early).
    environments = Environments(start_seconds=0.3)
    pool = make_pool(environments, max_environments=1, slots_per_environment=2, queue_limit=2)
    release = threading.Event()
    try:
        with futures.ThreadPoolExecutor(4) as workers:
            leases = [workers.submit(hold, pool, release, lease=True) for _ in range(4)]
            # Two hold the slots and two wait, once the environment has started.
            held_and_queued = lambda: (pool.capacity().in_flight, pool.capacity().queue_depth)  # noqa: E731
            assert wait_until(lambda: held_and_queued() == (2, 2)), pool.capacity()
            release_after(release, 0.5)
            results = [lease.result() for lease in leases]
        assert {r.environment for r in results} == {"env-1"}
        assert sum(r.cold_start_seconds > 0 for r in results) == 1
        assert sorted(r.queued_seconds for r in results)[2] >= 0.5  # two waited for the release
    finally:
        pool.close()


def test_idle_environments_are_reaped():
    environments = Environments(start_seconds=0.0)
    pool = make_pool(environments, idle_timeout_s=0.2)
    try:
        hold(pool, lease=True)
        deadline = time.monotonic() + 3
        while not environments.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert environments.stopped == ["env-1"]
        assert pool.environments() == []
    finally:
        pool.close()


def test_environments_kept_warm_start_at_once_and_outlive_the_idle_timeout():
    environments = Environments(start_seconds=0.2)
    pool = make_pool(environments, max_environments=3, min_environments=2, idle_timeout_s=0.2)
    try:
        pool.fill()
        assert sorted(pool.environments()) == ["env-1", "env-2"]
        first = hold(pool, lease=True)
        assert first.cold_start_seconds == 0
        release = threading.Event()
        with futures.ThreadPoolExecutor(3) as workers:
            leases = [workers.submit(hold, pool, release, lease=True) for _ in range(3)]
            assert wait_until(lambda: pool.capacity().in_flight == 3)
            release.set()
            assert sum(lease.result().cold_start_seconds > 0 for lease in leases) == 1
        deadline = time.monotonic() + 3
        while not environments.stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert len(environments.stopped) == 1 and len(pool.environments()) == 2
    finally:
        pool.close()


def test_the_warm_minimum_cannot_exceed_the_maximum():
    with pytest.raises(ValueError, match="min_environments"):
        make_pool(Environments(), max_environments=1, min_environments=2)


def test_a_discarded_environment_is_replaced():
    environments = Environments(start_seconds=0.0)
    pool = make_pool(environments)
    try:
        with pool.lease(5) as lease:
            lease.discard()
        assert environments.stopped == ["env-1"]
        assert hold(pool, lease=True).environment == "env-2"
    finally:
        pool.close()


def test_a_failed_start_frees_its_place():
    environments = Environments(start_seconds=0.0)
    calls = []

    def flaky_start():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("engine hiccup")
        return environments.start()

    pool = EnvironmentPool(flaky_start, environments.stop, max_environments=1)
    try:
        with pytest.raises(RuntimeError):
            hold(pool, lease=True)
        assert hold(pool, lease=True).environment == "env-1"
    finally:
        pool.close()


def test_a_dead_idle_environment_is_removed_and_the_minimum_started_again():
    environments, dead = Environments(start_seconds=0.01), set()
    pool = make_pool(
        environments,
        min_environments=1,
        probe=lambda e: "its process exited (-9)" if e in dead else None,
    )
    try:
        pool.fill()
        assert pool.environments() == ["env-1"]
        dead.add("env-1")  # killed behind the adapter's back
        assert wait_until(lambda: pool.environments() == ["env-2"], timeout=5)
        assert environments.stopped == ["env-1"]  # its remains stopped (a container removed)
    finally:
        pool.close()


def test_an_environment_in_use_is_not_probed_away():
    environments, release = Environments(start_seconds=0.01), threading.Event()
    pool = make_pool(environments, probe=lambda e: "looks dead")
    try:
        with futures.ThreadPoolExecutor(1) as workers:
            held = workers.submit(hold, pool, release, lease=True)
            assert wait_until(lambda: pool.environments() == ["env-1"], timeout=5)
            time.sleep(1.5)  # a probe sweep or more
            assert pool.environments() == ["env-1"]
            release.set()
            held.result(timeout=5)
        assert wait_until(lambda: pool.environments() == [], timeout=5)
    finally:
        pool.close()

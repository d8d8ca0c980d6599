"""The queue in front of a platform's slots: fixed, or sized to what the slots drain within the
latency objective at the pace they are held."""

import pytest

from straightline_inference.adapter.pool import EnvironmentPool
from straightline_inference.adapter.queue_bound import (
    MAX_LIMIT,
    MIN_LIMIT,
    RESIZE_EVERY,
    QueueBound,
    drain_limit,
)


@pytest.mark.parametrize(
    ("slots", "hold_s", "objective_s", "places"),
    [
        (4, 0.020, 0.3, 56),  # 4 x (15 - 1): the 56th waits 14 holds and runs 1
        (8, 0.100, 0.3, 16),
        # Xception on one slot, and a model slower than its objective: a wait of one run
        # misses it, but eight callers still queue rather than be refused.
        (1, 0.185, 0.3, MIN_LIMIT),
        (2, 0.400, 0.3, MIN_LIMIT),
        (8, 0.0001, 1.0, MAX_LIMIT),
    ],
)
def test_the_queue_holds_what_the_slots_drain_within_the_objective(
    slots, hold_s, objective_s, places
):
    assert drain_limit(slots, hold_s, objective_s) == places


def test_a_sized_queue_follows_the_median_hold_every_few_holds():
    bound = QueueBound.draining_within(0.3)
    assert bound.limit == MIN_LIMIT
    for _ in range(RESIZE_EVERY - 1):
        bound.held(0.050, slots=4)
    assert bound.limit == MIN_LIMIT  # not sized on fewer holds
    bound.held(0.050, slots=4)
    assert bound.limit == 20  # 4 x (6 - 1)
    for _ in range(3 * RESIZE_EVERY):  # slower now: the median moves, and the queue shrinks
        bound.held(0.075, slots=4)
    assert bound.limit == 12  # 4 x (4 - 1)


def test_a_fixed_queue_never_moves():
    bound = QueueBound(3)
    for _ in range(4 * RESIZE_EVERY):
        bound.held(0.001, slots=4)
    assert (bound.limit, bound.sized) == (3, False)


def test_a_pool_sizes_its_queue_from_its_leases():
    pool = EnvironmentPool(
        lambda: "env",
        lambda _: None,
        max_environments=1,
        slots_per_environment=2,
        queue_limit=QueueBound.draining_within(0.3),
    )
    try:
        assert pool.capacity().queue_limit == MIN_LIMIT
        for _ in range(RESIZE_EVERY):
            with pool.lease(timeout=5):
                pass
        # Leases of well under a millisecond: 2 slots drain far more than the cap in 300 ms.
        assert pool.capacity().queue_limit == MAX_LIMIT
    finally:
        pool.close()

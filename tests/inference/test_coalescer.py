"""Requests that go out together (the serverless adapter's opt-in batching, the Docker
adapter's coalescing)."""

import threading
import time
from concurrent import futures

import pytest

from straightline_common.errors import InvalidArgument, NotFound, Unavailable
from straightline_inference.adapter.backend import Capacity
from straightline_inference.adapter.coalescer import MAX_BATCH_SIZE, Batching, Coalescer
from tests.support.waiting import wait_until


class Recorder:
    """A `send` that answers each call with its own value doubled, and records the groups."""

    def __init__(self, fail_with=None):
        self.groups: list[list[int]] = []
        self.fail_with = fail_with

    def __call__(self, calls):
        self.groups.append(list(calls))
        if self.fail_with is not None:
            raise self.fail_with
        return [NotFound(f"no {c}") if c < 0 else c * 2 for c in calls]


def call_at_once(coalescer, values):
    """Each value through `coalescer.call` from its own thread, all at once: answers in order."""
    results = [None] * len(values)
    start = threading.Barrier(len(values))

    def one(index):
        start.wait()
        try:
            results[index] = coalescer.call(values[index])
        except Exception as error:  # the test looks at which
            results[index] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(values))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_a_call_alone_goes_alone_after_the_delay():
    send = Recorder()
    coalescer = Coalescer(send, max_size=4, max_delay_s=0.05)
    started = time.monotonic()
    assert coalescer.call(3) == 6
    assert 0.05 <= time.monotonic() - started < 1.0
    assert send.groups == [[3]]


def test_a_call_goes_at_once_when_there_is_no_point_in_waiting_for_more():
    send = Recorder()
    coalescer = Coalescer(send, max_size=4, max_delay_s=5.0, wait_for_more=lambda: False)
    started = time.monotonic()
    assert coalescer.call(3) == 6
    assert time.monotonic() - started < 4.0  # not the delay
    assert send.groups == [[3]]


def test_calls_waiting_for_their_leader_are_counted():
    release = threading.Event()

    def send(calls):
        release.wait(10)
        return [c * 2 for c in calls]

    coalescer = Coalescer(send, max_size=3, max_delay_s=5.0)
    with futures.ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(coalescer.call, value) for value in (1, 2, 3)]
        assert wait_until(lambda: coalescer.following == 2)
        release.set()
        assert [call.result(10) for call in calls] == [2, 4, 6]
    assert coalescer.following == 0


def test_calls_within_the_delay_go_together_up_to_the_size_each_with_its_answer():
    send = Recorder()
    coalescer = Coalescer(send, max_size=4, max_delay_s=1.0)
    started = time.monotonic()
    assert call_at_once(coalescer, list(range(8))) == [i * 2 for i in range(8)]
    assert sorted(len(group) for group in send.groups) == [4, 4]
    assert sorted(c for group in send.groups for c in group) == list(range(8))
    assert time.monotonic() - started < 0.9  # full groups do not wait out the delay


def test_a_group_stops_at_its_weight():
    send = Recorder()
    coalescer = Coalescer(send, max_size=8, max_delay_s=0.2, weight=lambda c: 10, max_weight=25)
    call_at_once(coalescer, list(range(6)))
    assert sorted(len(group) for group in send.groups) == [2, 2, 2]


def test_an_error_of_one_call_is_its_own_and_a_failed_send_fails_the_group():
    coalescer = Coalescer(Recorder(), max_size=4, max_delay_s=1.0)
    results = call_at_once(coalescer, [1, -1, 2, 3])
    assert [results[0], results[2], results[3]] == [2, 4, 6]
    assert isinstance(results[1], NotFound) and str(results[1]) == "no -1"

    failing = Coalescer(Recorder(fail_with=Unavailable("throttled")), max_size=4, max_delay_s=1.0)
    results = call_at_once(failing, [1, 2, 3, 4])
    assert all(isinstance(r, Unavailable) for r in results)


def test_a_send_that_miscounts_its_answers_fails_the_group_rather_than_misroute_them():
    coalescer = Coalescer(lambda calls: [0], max_size=2, max_delay_s=1.0)
    results = call_at_once(coalescer, [1, 2])
    assert all(isinstance(r, RuntimeError) and "2 calls got 1 answers" in str(r) for r in results)


def test_batching_is_off_by_default_and_counts_a_batch_per_environment_when_on():
    assert not Batching().on and Batching().coalescer(Recorder(), len, 0) is None
    capacity = Capacity(total=3, free=2, in_flight=1, queue_depth=0, warm_slots=2)
    assert Batching().slots(capacity) == capacity
    batched = Batching(size=4).slots(capacity)
    assert (batched.total, batched.free, batched.warm_slots, batched.in_flight) == (12, 8, 8, 1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"size": 0}, f"between 1 and {MAX_BATCH_SIZE}"),
        ({"size": MAX_BATCH_SIZE + 1}, f"between 1 and {MAX_BATCH_SIZE}"),
        ({"delay_s": -0.001}, "between 0 and 1000 ms"),
        ({"delay_s": 2.0}, "between 0 and 1000 ms"),
    ],
)
def test_batching_limits(fields, message):
    with pytest.raises(InvalidArgument, match=message):
        Batching(**fields)

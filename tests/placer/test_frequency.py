import threading

import pytest

from straightline_placer.frequency import FrequencyWindow


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rate_counts_arrivals_inside_the_window_including_the_current_one():
    clock = FakeClock()
    window = FrequencyWindow(10.0, clock)
    for _ in range(4):
        rate = window.record("m")
        clock.now += 1.0
    assert rate == pytest.approx(0.4)
    assert window.rate("m") == pytest.approx(0.4)


def test_arrivals_slide_out_of_the_window():
    clock = FakeClock()
    window = FrequencyWindow(2.0, clock)
    window.record("m")
    clock.now += 1.0
    window.record("m")
    clock.now += 1.0  # the first arrival is now exactly one window old: out
    assert window.rate("m") == pytest.approx(0.5)
    clock.now += 5.0
    assert window.rate("m") == 0.0
    assert window.record("m") == pytest.approx(0.5)


def test_models_are_counted_apart():
    clock = FakeClock()
    window = FrequencyWindow(1.0, clock)
    for _ in range(3):
        window.record("a")
    assert window.record("b") == pytest.approx(1.0)
    assert window.rate("a") == pytest.approx(3.0)
    assert window.rate("unknown") == 0.0


def test_resize_changes_the_divisor_and_the_horizon():
    clock = FakeClock()
    window = FrequencyWindow(10.0, clock)
    for _ in range(10):
        window.record("m")
        clock.now += 1.0
    window.resize(5.0)
    assert window.rate("m") == pytest.approx(4 / 5.0)


def test_concurrent_records_are_all_counted():
    window = FrequencyWindow(3600.0)
    threads = [
        threading.Thread(target=lambda: [window.record("m") for _ in range(2000)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert window.rate("m") == pytest.approx(16000 / 3600.0)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_window_must_be_positive(bad):
    with pytest.raises(ValueError, match="positive"):
        FrequencyWindow(bad)

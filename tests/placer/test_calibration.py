"""The margin the SLO-aware rule adds to a prediction, from the instance's recent errors."""

import threading

import pytest

from straightline_placer.calibration import (
    MAX_AGE_S,
    MIN_ERRORS,
    WINDOW,
    PredictionErrors,
    errors_for,
)


def errors_of(*values: float, clock=lambda: 0.0) -> PredictionErrors:
    errors = PredictionErrors(clock)
    for value in values:
        errors.add(value)
    return errors


def test_no_error_yet_adds_nothing():
    assert PredictionErrors().margin_s(0.99) == 0.0


def test_few_errors_add_the_worst_one_and_never_take_away():
    assert errors_of(0.01, 0.05, -0.02).margin_s(0.5) == pytest.approx(0.05)
    assert errors_of(-0.04, -0.02).margin_s(0.99) == 0.0


def test_until_there_are_enough_errors_the_prior_is_the_least_margin():
    assert PredictionErrors().margin_s(0.99, prior_s=0.1) == pytest.approx(0.1)
    assert errors_of(0.01, 0.2).margin_s(0.99, prior_s=0.1) == pytest.approx(0.2)
    assert errors_of(0.01, 0.02).margin_s(0.99, prior_s=0.1) == pytest.approx(0.1)
    assert errors_of(*[0.01] * MIN_ERRORS).margin_s(0.99, prior_s=0.1) == pytest.approx(0.01)


@pytest.mark.parametrize(("attainment", "margin"), [(0.5, 0.099), (0.9, 0.151), (1.0, 0.163)])
def test_the_margin_is_the_errors_quantile_at_the_attainment_target(attainment, margin):
    # 164 errors of 0 to 163 ms, the last 128 kept (36 to 163 ms): at 0.9, 116 of them
    # (90.6%) are within 151 ms and 115 (89.8%) within 150 ms.
    assert WINDOW == 128
    errors = errors_of(*(i / 1000 for i in range(164)))
    assert errors.margin_s(attainment) == pytest.approx(margin)


def test_a_prediction_that_runs_high_lowers_the_bar():
    assert errors_of(*[-0.03] * MIN_ERRORS).margin_s(0.99) == pytest.approx(-0.03)


def test_errors_age_out_so_that_a_platform_kept_out_by_them_is_judged_again():
    now = [0.0]
    errors = errors_of(*[0.2] * MIN_ERRORS, clock=lambda: now[0])
    assert errors.margin_s(0.99) == pytest.approx(0.2)
    now[0] = MAX_AGE_S / 2
    errors.add(0.01)
    assert errors.margin_s(0.5) == pytest.approx(0.2)
    now[0] = MAX_AGE_S + 1  # the first eight are too old; the last one is left
    assert errors.margin_s(0.99) == pytest.approx(0.01)
    now[0] = 2 * MAX_AGE_S
    assert errors.margin_s(0.99) == 0.0


def test_errors_added_from_many_threads_are_all_kept():
    errors = PredictionErrors()

    def add_some():
        for _ in range(WINDOW):
            errors.add(0.01)
            errors.margin_s(0.9)

    threads = [threading.Thread(target=add_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors.margin_s(1.0) == pytest.approx(0.01)


def test_errors_are_kept_per_load_level():
    # Alone on its host the platform is predicted well; with another request beside it, its
    # answers come 90 ms late: only predictions made at that level carry that margin.
    errors = PredictionErrors(lambda: 0.0)
    for _ in range(MIN_ERRORS):
        errors.add(0.005, level=0)
        errors.add(0.09, level=1)
    assert errors.margin_s(0.99, level=0) == pytest.approx(0.005)
    assert errors.margin_s(0.99, level=1) == pytest.approx(0.09)
    assert errors.margin_s(0.99, prior_s=0.05, level=2) == pytest.approx(0.05)  # none yet


def test_recent_errors_are_counted_per_level():
    now = [0.0]
    errors = errors_of(*[0.01] * 3, clock=lambda: now[0])
    errors.add(0.01, level=1)
    assert (errors.known(), errors.known(level=1), errors.known(level=2)) == (3, 1, 0)
    now[0] = MAX_AGE_S + 1
    assert errors.known() == 0


@pytest.mark.parametrize(
    ("attainment", "needed"), [(0.99, 100), (0.95, 20), (0.9, 10), (0.5, 8), (0.999, 128)]
)
def test_a_quantile_at_the_target_needs_one_over_one_minus_the_target_errors(attainment, needed):
    # Fewer, and the quantile would be the largest error; never fewer than a margin needs nor
    # more than the window keeps.
    assert errors_for(attainment) == needed

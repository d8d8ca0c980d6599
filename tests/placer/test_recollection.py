"""The placer's memory of figures its adapters have forgotten (`recollection.py`), alone and as
the SLO-aware rule's predictions read it."""

import pytest

from straightline_placer.algorithm import Rule
from straightline_placer.recollection import BASE_HOLD_S, MAX_HOLD_S, Recollection
from straightline_placer.registry import InstanceStats
from tests.placer.test_rules import DOCKER, SERVERLESS, decide, predicted, state


def test_figures_within_the_objective_are_recalled_without_a_hold():
    memory = Recollection()
    memory.remember("fast", too_slow=False, rate_rps=20.0, now=0.0)
    assert memory.recalls(too_slow=False, rate_rps=20.0, now=10_000.0)


def test_figures_too_slow_are_recalled_for_the_hold_while_the_rate_stays_up():
    memory = Recollection()
    memory.remember("slow", too_slow=True, rate_rps=10.0, now=0.0)
    assert memory.recalls(too_slow=True, rate_rps=10.0, now=BASE_HOLD_S - 1)
    assert memory.recalls(too_slow=True, rate_rps=8.0, now=1.0)  # 80% of the rate: still held
    assert not memory.recalls(too_slow=True, rate_rps=7.9, now=1.0)  # the load went down
    assert not memory.recalls(too_slow=True, rate_rps=10.0, now=BASE_HOLD_S)  # the hold is over


def test_the_hold_doubles_each_time_a_re_measurement_finds_it_too_slow_again_up_to_a_limit():
    memory, now, holds = Recollection(), 0.0, []
    for _ in range(6):
        memory.remember("slow", too_slow=True, rate_rps=10.0, now=now)
        holds.append(memory.hold_s)
        now = memory.slow_until
        assert not memory.recalls(too_slow=True, rate_rps=10.0, now=now)  # measured again
    assert holds == [60.0, 120.0, 240.0, 480.0, MAX_HOLD_S, MAX_HOLD_S]


def test_fresh_figures_while_held_refresh_the_hold_without_doubling_it():
    memory = Recollection()
    memory.remember("slow", too_slow=True, rate_rps=10.0, now=0.0)
    memory.remember("slow", too_slow=True, rate_rps=30.0, now=20.0)
    assert (memory.hold_s, memory.slow_until) == (BASE_HOLD_S, 20.0 + BASE_HOLD_S)
    assert memory.slow_at_rps == 10.0  # the lowest rate it was too slow at


def test_figures_within_the_objective_reset_the_hold():
    memory = Recollection()
    memory.remember("slow", too_slow=True, rate_rps=10.0, now=0.0)
    memory.remember("fast", too_slow=False, rate_rps=10.0, now=5.0)
    memory.remember("slow", too_slow=True, rate_rps=10.0, now=6.0)
    assert memory.hold_s == BASE_HOLD_S


# As the predictions read it ------------------------------------------------------------------


def forget(platform_state):
    """The adapter's next heartbeat: nothing measured in the last 30 s."""
    platform_state.instance.stats = InstanceStats()


def test_a_platform_found_too_slow_stays_out_after_its_adapter_forgets():
    docker, serverless = state(DOCKER, service=0.35), state(SERVERLESS, service=0.15)
    assert decide(Rule.SLO_AWARE, predicted(docker, serverless, now=0.0)).platform == SERVERLESS
    forget(docker)
    assert decide(Rule.SLO_AWARE, predicted(docker, serverless, now=40.0)).platform == SERVERLESS
    assert docker.predicted_latency_s == pytest.approx(0.35, abs=0.01)  # as last measured


def test_after_the_hold_a_platform_found_too_slow_is_measured_again():
    docker, serverless = state(DOCKER, service=0.35), state(SERVERLESS, service=0.15)
    predicted(docker, serverless, now=0.0)
    forget(docker)
    decision = decide(Rule.SLO_AWARE, predicted(docker, serverless, now=BASE_HOLD_S + 1))
    assert (decision.platform, decision.mirror) == (SERVERLESS, (DOCKER,))  # measured by a copy
    assert docker.predicted_latency_s < 0.01


def test_when_the_load_goes_down_a_platform_found_too_slow_is_measured_again():
    docker, serverless = state(DOCKER, service=0.35), state(SERVERLESS, service=0.15)
    predicted(docker, serverless, now=0.0, rate_rps=20.0)
    forget(docker)
    decision = decide(Rule.SLO_AWARE, predicted(docker, serverless, rate_rps=10.0))
    assert decision.mirror == (DOCKER,)


def test_a_platform_within_the_objective_is_predicted_as_last_measured_after_its_adapter_forgets():
    docker = state(DOCKER, service=0.2)
    predicted(docker, now=0.0)
    forget(docker)
    predicted(docker, now=1_000.0)
    assert docker.predicted_latency_s == pytest.approx(0.2, abs=0.01)
    assert docker.predicted_cost_usd > 0

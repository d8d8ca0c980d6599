"""The SLO-aware rule: the cheapest platform predicted to meet the request's latency objective
with the policy's attainment target (its prediction plus the margin its recent errors call for,
`calibration.py`); else the one predicted fastest, or, when the policy sheds late requests, a
refusal at once, unless a platform can start it at once on a core nothing else runs on (a
request shed there would leave the core idle, helping no one); and a refusal at once when none
can answer before the request's deadline. A platform whose margin rests on enough of its own
errors to be a quantile at the attainment target (calibrated, `calibration.py`) is preferred
while one meets the objective; the others then get copies.
The predictions are the placer's (`prediction.py`)."""

import dataclasses
from collections.abc import Iterable

from straightline_placer.algorithm import Branch, Decision, platform_label
from straightline_placer.registry import PlatformState
from straightline_placer.rules.base import Inputs, Need, describe_free_slots


class SloAwareRule:
    needs = frozenset({Need.PREDICTIONS})
    falls_back = True

    def decide(self, inputs: Inputs) -> Decision:
        candidates = [
            (state.predicted_latency_s, position, state)
            for position, state in enumerate(inputs.platforms.values())
            if state.predicted_latency_s is not None
        ]
        if not candidates:
            return Decision(None, Branch.NO_CAPACITY, _nowhere(inputs))
        # A platform not measured yet is measured by a copy of the request while a measured
        # one serves it, unless the two share a host (the copy would slow the request it
        # copies); when no measured one can serve it, it takes one request at a time. So is
        # a measured platform that is not calibrated (too few recent errors at its load level
        # for the target's quantile) while a calibrated one meets the objective: its errors are
        # learnt on copies, not on users' requests.
        measured = [c for c in candidates if not c[2].unmeasured]
        if measured:
            calibrated = [c for c in measured if c[2].calibrated]
            decision = self._cheapest_within(inputs, calibrated)
            calibrated_within = decision is not None
            decision = decision or self._choose(inputs, measured)
            if decision.platform is not None:
                return _with_copies(decision, inputs, candidates, calibrated_within)
        return self._choose(inputs, [c for c in candidates if not c[2].probing] or candidates)

    @staticmethod
    def _cheapest_within(
        inputs: Inputs, candidates: list[tuple[float, int, PlatformState]]
    ) -> Decision | None:
        within = [c for c in candidates if c[0] + c[2].margin_s <= _objective(inputs)]
        if not within:
            return None
        cheapest = min(within, key=lambda c: (c[2].predicted_cost_usd, c[0], c[1]))
        return Decision(cheapest[2].platform, Branch.CHEAPEST_WITHIN_OBJECTIVE)

    def _choose(
        self, inputs: Inputs, candidates: list[tuple[float, int, PlatformState]]
    ) -> Decision:
        cheapest = self._cheapest_within(inputs, candidates)
        if cheapest is not None:
            return cheapest
        deadline = _deadline(inputs)
        fastest = min(candidates, key=lambda c: (c[0], c[1]))
        if fastest[0] > deadline:
            return Decision(None, Branch.DEADLINE_UNMEETABLE, _too_late(inputs, deadline))
        if inputs.shed_late:
            idle = [c for c in candidates if c[2].spare_core and c[0] <= deadline]
            if not idle:
                return Decision(None, Branch.OBJECTIVE_UNMEETABLE, _shed(inputs))
            fastest = min(idle, key=lambda c: (c[0], c[1]))
        return Decision(fastest[2].platform, Branch.LOWEST_PREDICTED_LATENCY)


def _with_copies(
    decision: Decision,
    inputs: Inputs,
    candidates: list[tuple[float, int, PlatformState]],
    uncalibrated_too: bool,
) -> Decision:
    """The decision, with a copy of the request for each platform to be measured: not
    measured yet, or (`uncalibrated_too`) measured without enough errors to be calibrated and
    nothing on its way there; never one on the chosen platform's host."""
    assert decision.platform is not None
    host = inputs.platforms[decision.platform].host
    mirror = tuple(
        state.platform
        for _, _, state in candidates
        if state.platform != decision.platform
        and not (host and state.host == host)
        and (
            (state.unmeasured and not state.probing)
            or (
                uncalibrated_too
                and not state.unmeasured
                and not state.calibrated
                and not state.busy
            )
        )
    )
    return dataclasses.replace(decision, mirror=mirror) if mirror else decision


def _deadline(inputs: Inputs) -> float:
    return inputs.deadline_s if inputs.deadline_s is not None else float("inf")


def _objective(inputs: Inputs) -> float:
    return min(_deadline(inputs), inputs.latency_objective_s or float("inf"))


def _nowhere(inputs: Inputs) -> str:
    return (
        f"no platform can take the request now: every one is full with no queue room (free: "
        f"{describe_free_slots(inputs)}); the request was not sent anywhere: retry with backoff"
    )


def _too_late(inputs: Inputs, deadline: float) -> str:
    return (
        f"no platform is predicted to answer within the request's deadline of "
        f"{deadline * 1e3:.0f} ms (predicted: {_predictions(inputs.platforms.values())}); "
        "the request was not sent anywhere: give it a longer deadline or retry later"
    )


def _shed(inputs: Inputs) -> str:
    return (
        f"no platform is predicted to answer within the latency objective of "
        f"{_objective(inputs) * 1e3:.0f} ms (predicted: "
        f"{_predictions(inputs.platforms.values())}) and the policy sheds late requests; "
        "the request was not sent anywhere: retry with backoff"
    )


def _predictions(states: Iterable[PlatformState]) -> str:
    return ", ".join(
        f"{platform_label(state.platform)} "
        + (
            "cannot take it"
            if state.predicted_latency_s is None
            else f"{state.predicted_latency_s * 1e3:.0f} ms"
        )
        for state in states
    )

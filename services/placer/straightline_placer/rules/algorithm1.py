"""The rules built on the paper's Algorithm 1 (`algorithm.place`): the paper's own, its
capacity-aware and latency-aware variants, and pinning to one platform (the baselines)."""

from dataclasses import dataclass

from straightline_placer import algorithm
from straightline_placer.algorithm import Branch, Decision, Platform
from straightline_placer.rules.base import Inputs, Need, describe_free_slots

_SERVERLESS = Platform.SERVERLESS


class PaperRule:
    """Algorithm 1 as the paper writes it: serverless is taken as unlimited."""

    needs: frozenset[Need] = frozenset()
    falls_back = True

    def decide(self, inputs: Inputs) -> Decision:
        return self._place(inputs, serverless_available=True)

    @staticmethod
    def _place(inputs: Inputs, serverless_available: bool) -> Decision:
        decision = algorithm.place(
            inputs.f_t,
            inputs.r_d,
            inputs.frequency_threshold,
            inputs.size_threshold,
            inputs.has_free_slot(Platform.FLASK),
            inputs.has_free_slot(Platform.DOCKER),
            serverless_available,
        )
        if decision.platform is None:
            return Decision(None, decision.branch, _no_capacity(inputs))
        return decision


class CapacityAwareRule(PaperRule):
    """Algorithm 1 with S_L in view: serverless only while it has a free slot."""

    def decide(self, inputs: Inputs) -> Decision:
        return self._place(inputs, serverless_available=inputs.has_free_slot(_SERVERLESS))


class LatencyAwareRule(CapacityAwareRule):
    """The capacity-aware rule, except that line 3 sends a hot small request to the platform
    with a free slot whose instance reports the lowest recent p95 latency."""

    def decide(self, inputs: Inputs) -> Decision:
        if algorithm.is_hot_and_small(
            inputs.f_t, inputs.r_d, inputs.frequency_threshold, inputs.size_threshold
        ):
            platform = fastest_free(inputs)
            if platform is not None:
                return Decision(platform, Branch.FASTEST_FREE)
        return super().decide(inputs)


def fastest_free(inputs: Inputs) -> Platform | None:
    """The platform with a free slot whose instance reports the lowest recent p95, or None.
    One that has reported no latency yet (0) counts as the fastest, so it gets a request and
    is measured. Ties go to line 3's own choice (serverless), then the order of preference."""
    free = [
        (state.recent_latency_p95_s, state.platform != _SERVERLESS, position, state.platform)
        for position, state in enumerate(inputs.platforms.values())
        if state.free_slots > 0
    ]
    return min(free)[-1] if free else None


@dataclass(frozen=True, slots=True)
class PinnedRule:
    """Every request to one platform, without fallback: the single-platform baselines."""

    platform: Platform
    needs: frozenset[Need] = frozenset()
    falls_back: bool = False

    def decide(self, inputs: Inputs) -> Decision:
        return Decision(self.platform, Branch.PINNED)


def _no_capacity(inputs: Inputs) -> str:
    return (
        f"no platform has a free slot now (free: {describe_free_slots(inputs)}); "
        "the request was not sent anywhere: retry with backoff"
    )

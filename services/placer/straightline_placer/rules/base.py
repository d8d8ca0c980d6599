"""What every placement rule shares: its inputs, what it may ask the placer to compute, and
the interface the placer calls. A rule is a pure function of its inputs."""

import enum
from dataclasses import dataclass
from typing import Protocol

from straightline_placer.algorithm import Decision, Platform, platform_label
from straightline_placer.registry import PlatformState


class Need(enum.Enum):
    """What a rule reads beyond f_t, r_d, F, D and the free slots, so that the placer computes
    it only for the rules that read it."""

    # Per platform: predicted latency and cost of this request (PlatformState.predicted_*).
    PREDICTIONS = enum.auto()


@dataclass(frozen=True, slots=True)
class Inputs:
    """A rule's inputs as it saw them."""

    f_t: float
    r_d: int
    frequency_threshold: float
    size_threshold: int
    # Every platform with a live instance serving the model, in the policy's preference order.
    platforms: dict[Platform, PlatformState]
    # Under rules that need predictions: the request's latency objective and deadline, seconds.
    latency_objective_s: float | None = None
    deadline_s: float | None = None
    # Under the SLO-aware rule: refuse a request no platform is predicted to meet in time.
    shed_late: bool = False

    def free_slots(self, platform: Platform) -> int:
        state = self.platforms.get(platform)
        return 0 if state is None else state.free_slots

    def has_free_slot(self, platform: Platform) -> bool:
        return self.free_slots(platform) > 0


class PlacementRule(Protocol):
    """Decides where one request goes. `needs` names what the placer must compute for it;
    `falls_back` whether a refused request may be tried on other platforms."""

    @property
    def needs(self) -> frozenset[Need]: ...

    @property
    def falls_back(self) -> bool: ...

    def decide(self, inputs: Inputs) -> Decision: ...


def describe_free_slots(inputs: Inputs) -> str:
    """ "flask 0, docker 0, serverless 0": the free slots, for a refusal's sentence."""
    return ", ".join(
        f"{platform_label(platform)} {state.free_slots}"
        for platform, state in inputs.platforms.items()
    )

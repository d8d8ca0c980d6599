"""Placement rules, one class each, and the registry the policy picks them from.

Adding a rule: write a class with `needs`, `falls_back` and `decide(inputs) -> Decision`
(see `base.PlacementRule`), and register it under its policy value with `register`.
"""

from straightline_placer.algorithm import Platform, Rule
from straightline_placer.rules.algorithm1 import (
    CapacityAwareRule,
    LatencyAwareRule,
    PaperRule,
    PinnedRule,
)
from straightline_placer.rules.base import Inputs, Need, PlacementRule
from straightline_placer.rules.slo import SloAwareRule

__all__ = ["Inputs", "Need", "PlacementRule", "register", "rule_for"]

RULES: dict[int, PlacementRule] = {}
_PINNED = {platform: PinnedRule(platform) for platform in Platform}


def register(kind: int, rule: PlacementRule) -> None:
    """Makes `rule` the one a policy with placement_rule `kind` uses."""
    RULES[kind] = rule


def rule_for(placement_rule: int, pinned_platform: Platform | None) -> PlacementRule:
    if pinned_platform is not None:
        return _PINNED[pinned_platform]
    return RULES[placement_rule]


register(Rule.PAPER, PaperRule())
register(Rule.CAPACITY_AWARE, CapacityAwareRule())
register(Rule.LATENCY_AWARE, LatencyAwareRule())
register(Rule.SLO_AWARE, SloAwareRule())

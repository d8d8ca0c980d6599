"""The placer's policy (F, D, window, heartbeat timeout, pinning, fallback, placement rule, the
SLO-aware rule's objectives and platform settings) and its validation.

This module and the Platform enum are the only places that name platforms: everything else
reads their order of preference and their settings from the policy.
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from straightline_common.batching_limits import MAX_BATCH_SIZE, MAX_QUEUE_DELAY_S
from straightline_common.errors import InvalidArgument
from straightline_common.names import check_id
from straightline_placer import rules
from straightline_placer.algorithm import Platform, Rule

# AWS Lambda's limit on a synchronous invocation's payload: D must stay under it, since
# requests under D may be sent to serverless (Algorithm 1, line 3).
SERVERLESS_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
# Larger requests (a Place r_d) are refused as absurd.
MAX_REQUEST_BYTES = 64 * 1024 * 1024
# The largest payload Infer forwards: the largest image any adapter decodes.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
# Largest image a serverless platform takes: Lambda's 6 MB synchronous limit applies to the
# JSON event, in which the image travels base64-encoded (4/3 larger) beside a few fields.
SERVERLESS_MAX_IMAGE_BYTES = (SERVERLESS_PAYLOAD_LIMIT_BYTES - 4096) * 3 // 4
MAX_LATENCY_OBJECTIVES = 1000
MAX_MODEL_NAME_LENGTH = 256
_SECONDS_RANGE = (0.1, 3600.0)
_OBJECTIVE_RANGE = (0.001, 3600.0)
_ATTAINMENT_RANGE = (0.5, 1.0)
_MEMORY_MB_RANGE = (128, 10240)  # Lambda's
_MAX_ROUND_TRIP_S = 60.0
_MAX_HOST_CORES = 1024


@dataclass(frozen=True, slots=True)
class PlatformSettings:
    """What the SLO-aware rule assumes of a platform: prices (US dollars), network, limits."""

    price_per_instance_hour: float = 0.0
    price_per_gb_second: float = 0.0
    price_per_request: float = 0.0
    memory_mb: int = 2048
    network_round_trip_s: float = 0.0
    bandwidth_bytes_per_s: int = 1_000_000_000
    max_request_bytes: int = MAX_REQUEST_BYTES
    # Platforms naming the same host share its cores (empty: a host of its own).
    host: str = ""
    host_cores: int = 0
    # Ceilings on the platform's model servers' adaptive batching, sent to its adapters with
    # every heartbeat's answer: 0 / None, the models' own.
    max_batch_size: int = 0
    max_queue_delay_s: float | None = None

    def check(self, platform: Platform) -> None:
        where = f"platform_settings of {platform.name.lower()}"
        for name in ("price_per_instance_hour", "price_per_gb_second", "price_per_request"):
            price = getattr(self, name)
            if not (math.isfinite(price) and price >= 0):
                raise InvalidArgument(f"{where}: {name} must be zero or more US dollars")
        low, high = _MEMORY_MB_RANGE
        if not low <= self.memory_mb <= high:
            raise InvalidArgument(f"{where}: memory_mb must be between {low} and {high}")
        if not (math.isfinite(self.network_round_trip_s) and self.network_round_trip_s >= 0):
            raise InvalidArgument(f"{where}: network_round_trip must be zero or more")
        if self.network_round_trip_s > _MAX_ROUND_TRIP_S:
            raise InvalidArgument(f"{where}: network_round_trip must be at most 60 s")
        if self.bandwidth_bytes_per_s <= 0:
            raise InvalidArgument(f"{where}: bandwidth_bytes_per_second must be positive")
        if not 0 < self.max_request_bytes <= MAX_REQUEST_BYTES:
            raise InvalidArgument(
                f"{where}: max_request_bytes must be above 0 and at most {MAX_REQUEST_BYTES}"
            )
        self._check_host(where)
        self._check_batching(where)

    def _check_batching(self, where: str) -> None:
        if not 0 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise InvalidArgument(
                f"{where}: batching.max_batch_size must be between 1 and {MAX_BATCH_SIZE} "
                "(0: the models' own)"
            )
        delay = self.max_queue_delay_s
        if delay is not None and not (math.isfinite(delay) and 0 <= delay <= MAX_QUEUE_DELAY_S):
            raise InvalidArgument(
                f"{where}: batching.max_queue_delay must be between 0 and "
                f"{MAX_QUEUE_DELAY_S * 1e3:.0f} ms"
            )

    def _check_host(self, where: str) -> None:
        if not self.host:
            if self.host_cores:
                raise InvalidArgument(f"{where}: host_cores needs a host to be named")
            return
        check_id(self.host, f"{where}: host")
        if not 1 <= self.host_cores <= _MAX_HOST_CORES:
            raise InvalidArgument(
                f"{where}: host_cores must be between 1 and {_MAX_HOST_CORES} with a host named"
            )


# An on-demand instance of 2 vCPUs (about $0.085 an hour) runs a Flask server, a Docker host
# or an OIP endpoint; Lambda's x86 prices, at 2 GB.
_INSTANCE_HOUR_USD = 0.085
DEFAULT_PLATFORM_SETTINGS = MappingProxyType(
    {
        **{p: PlatformSettings(price_per_instance_hour=_INSTANCE_HOUR_USD) for p in Platform},
        Platform.SERVERLESS: PlatformSettings(
            price_per_gb_second=0.0000166667,
            price_per_request=0.0000002,
            memory_mb=2048,
            max_request_bytes=SERVERLESS_MAX_IMAGE_BYTES,
        ),
    }
)


@dataclass(frozen=True)
class Policy:
    # F. The paper gives no value; 10 requests/s is about what one Flask server with a few
    # workers does with an Xception-sized model on two cores.
    frequency_threshold_rps: float = 10.0
    # D. The paper gives no value; 256 KiB sends the largest ~1% of the animals4 images
    # (median 13.5 KB, 99th percentile 135 KB) to Docker.
    data_size_threshold_bytes: int = 256 * 1024
    frequency_window_s: float = 10.0
    heartbeat_timeout_s: float = 3.0
    # None: Algorithm 1. A platform: every request goes there, without fallback (baselines).
    pinned_platform: Platform | None = None
    fallback_enabled: bool = True
    # An OIP request's images placed once, together (True), or each on its own (False).
    keep_batches_together: bool = False
    placement_rule: int = Rule.PAPER  # a Rule, or the key of a rule registered in rules
    # The SLO-aware rule's objective, seconds, per model name and for the others.
    latency_objectives: Mapping[str, float] = field(default_factory=dict)
    default_latency_objective_s: float = 0.3
    # The share of a model's requests the SLO-aware rule sends only where the recent errors of
    # its predictions say they meet the objective (calibration.py).
    slo_attainment_target: float = 0.99
    # The SLO-aware rule refuses at once a request no platform is predicted to answer within
    # its objective (False: it goes to the platform predicted fastest).
    shed_late_requests: bool = False
    platform_settings: Mapping[Platform, PlatformSettings] = field(
        default_factory=lambda: DEFAULT_PLATFORM_SETTINGS
    )
    # The paper's order (lines 11, 15, 18), which fallback follows and views are listed in;
    # platforms the paper does not have come after its three.
    preference_order: tuple[Platform, ...] = tuple(Platform)

    def validated(self) -> "Policy":
        """Returns the policy (its preference order followed by the platforms it leaves out),
        or raises InvalidArgument naming the first invalid field."""
        f = self.frequency_threshold_rps
        if not (math.isfinite(f) and f > 0):
            raise InvalidArgument(
                f"frequency_threshold_rps must be a positive number of requests per second, not {f}"
            )
        d = self.data_size_threshold_bytes
        if not 0 < d < SERVERLESS_PAYLOAD_LIMIT_BYTES:
            raise InvalidArgument(
                f"data_size_threshold_bytes must be above 0 and under "
                f"{SERVERLESS_PAYLOAD_LIMIT_BYTES} (the serverless payload limit, 6 MB), not {d}"
            )
        for name in ("frequency_window_s", "heartbeat_timeout_s"):
            _check_seconds(name, getattr(self, name), _SECONDS_RANGE)
        if self.placement_rule not in rules.RULES:
            raise InvalidArgument(
                f"placement_rule {self.placement_rule} is not a rule this placer has; "
                f"it has {', '.join(rule_name(kind) for kind in rules.RULES)}"
            )
        self._check_objectives()
        if set(self.platform_settings) != set(Platform):
            raise InvalidArgument("platform_settings must hold every platform")
        for platform, settings in self.platform_settings.items():
            settings.check(platform)
        order = self.preference_order
        if len(set(order)) != len(order) or not set(order) <= set(Platform):
            raise InvalidArgument("preference_order must list each platform at most once")
        unlisted = tuple(platform for platform in Platform if platform not in order)
        return dataclasses.replace(self, preference_order=order + unlisted) if unlisted else self

    def _check_objectives(self) -> None:
        _check_seconds(
            "default_latency_objective", self.default_latency_objective_s, _OBJECTIVE_RANGE
        )
        if len(self.latency_objectives) > MAX_LATENCY_OBJECTIVES:
            raise InvalidArgument(
                f"latency_objectives holds at most {MAX_LATENCY_OBJECTIVES} models, not "
                f"{len(self.latency_objectives)}"
            )
        for model, objective in self.latency_objectives.items():
            if not 0 < len(model) <= MAX_MODEL_NAME_LENGTH:
                raise InvalidArgument(
                    f"latency_objectives: a model name must have 1 to {MAX_MODEL_NAME_LENGTH} "
                    "characters"
                )
            _check_seconds("a latency objective", objective, _OBJECTIVE_RANGE)
        low, high = _ATTAINMENT_RANGE
        target = self.slo_attainment_target
        if not (math.isfinite(target) and low <= target <= high):
            raise InvalidArgument(
                f"slo_attainment_target must be a share between {low:g} and {high:g} of the "
                f"requests (0.99: 99%), not {target}"
            )

    def with_changes(self, **changes: Any) -> "Policy":
        """A new, validated policy. `platform_settings` holds the platforms to change; the
        others keep theirs."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InvalidArgument(f"unknown policy field(s): {', '.join(sorted(unknown))}")
        if "platform_settings" in changes:
            changes["platform_settings"] = MappingProxyType(
                {**self.platform_settings, **changes["platform_settings"]}
            )
        if "latency_objectives" in changes:
            changes["latency_objectives"] = MappingProxyType(dict(changes["latency_objectives"]))
        return dataclasses.replace(self, **changes).validated()

    @property
    def heartbeat_interval_s(self) -> float:
        """How often adapters should report: three reports per timeout."""
        return self.heartbeat_timeout_s / 3

    def latency_objective_s(self, model_name: str) -> float:
        return self.latency_objectives.get(model_name, self.default_latency_objective_s)


def rule_name(kind: int) -> str:
    """paper, capacity-aware, ...: a rule as the command line and the config name it."""
    if kind not in Rule._value2member_map_:
        return str(kind)
    return Rule(kind).name.lower().replace("_", "-")


def _check_seconds(name: str, seconds: float, allowed: tuple[float, float]) -> None:
    low, high = allowed
    if not (math.isfinite(seconds) and low <= seconds <= high):
        raise InvalidArgument(
            f"{name.removesuffix('_s')} must be between {low:g} s and {high:.0f} s, not {seconds} s"
        )

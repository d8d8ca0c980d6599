"""The placer's policy (F, D, window, heartbeat timeout, pinning, fallback, placement rule)
and its validation."""

import dataclasses
import math
from dataclasses import dataclass

from straightline_common.errors import InvalidArgument
from straightline_placer.algorithm import Platform, Rule

# AWS Lambda's limit on a synchronous invocation's payload: D must stay under it, since
# requests under D may be sent to serverless (Algorithm 1, line 3).
SERVERLESS_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
_SECONDS_RANGE = (0.1, 3600.0)


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
    placement_rule: Rule = Rule.PAPER

    def validated(self) -> "Policy":
        """Returns self, or raises InvalidArgument naming the first invalid field."""
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
            seconds = getattr(self, name)
            low, high = _SECONDS_RANGE
            if not (math.isfinite(seconds) and low <= seconds <= high):
                raise InvalidArgument(
                    f"{name.removesuffix('_s')} must be between {low} s and {high:.0f} s, "
                    f"not {seconds} s"
                )
        return self

    def with_changes(self, **changes) -> "Policy":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InvalidArgument(f"unknown policy field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes).validated()

    @property
    def heartbeat_interval_s(self) -> float:
        """How often adapters should report: three reports per timeout."""
        return self.heartbeat_timeout_s / 3

"""Algorithm 1 of the StraightLine paper (empirical dynamic placing), as a pure function.

The branches and their boundaries are the paper's, line for line:

    line 3:  f_t > F and r_d < D  -> serverless
    line 7:  r_d > D              -> docker
    line 11: S_F not empty        -> flask
    line 15: S_D not empty        -> docker
    line 18: otherwise            -> serverless

So r_d == D is "moderate" (lines 11-18), and f_t == F is not high frequency.

The paper takes serverless as unlimited, so lines 3 and 18 send there whatever serverless
has free: that is `serverless_available=True`, the default. Our capacity-aware variant
(docs/placer.md says why) passes S_L, whether live serverless instances have a free slot:
without one, line 3 does not match (lines 7-18 decide) and line 18 refuses the request.
Our latency-aware variant passes, in addition, the platform with a free slot that reports the
lowest recent latency (`fastest_free`), and line 3 sends the request there.
"""

import enum
from dataclasses import dataclass


class Platform(enum.IntEnum):
    """Values equal those of straightline.v1.Platform."""

    FLASK = 1
    DOCKER = 2
    SERVERLESS = 3


class Branch(enum.IntEnum):
    """Values equal those of straightline.v1.Branch."""

    HIGH_FREQUENCY_SMALL_DATA = 1
    LARGE_DATA = 2
    FLASK_AVAILABLE = 3
    DOCKER_AVAILABLE = 4
    NOTHING_AVAILABLE = 5
    PINNED = 6
    NO_CAPACITY = 7
    FASTEST_FREE = 8


class Rule(enum.IntEnum):
    """Values equal those of straightline.v1.PlacementRule."""

    PAPER = 1
    CAPACITY_AWARE = 2
    LATENCY_AWARE = 3


@dataclass(frozen=True, slots=True)
class Decision:
    platform: Platform | None  # None: refused, no platform has capacity
    branch: Branch


HIGH_FREQUENCY_SMALL_DATA = Decision(Platform.SERVERLESS, Branch.HIGH_FREQUENCY_SMALL_DATA)
LARGE_DATA = Decision(Platform.DOCKER, Branch.LARGE_DATA)
FLASK_AVAILABLE = Decision(Platform.FLASK, Branch.FLASK_AVAILABLE)
DOCKER_AVAILABLE = Decision(Platform.DOCKER, Branch.DOCKER_AVAILABLE)
NOTHING_AVAILABLE = Decision(Platform.SERVERLESS, Branch.NOTHING_AVAILABLE)
NO_CAPACITY = Decision(None, Branch.NO_CAPACITY)


def platform_label(platform: Platform | None) -> str:
    """The platform's name in metrics and spans; "none" for a refused request."""
    return platform.name.lower() if platform else "none"


def place(
    f_t: float,
    r_d: int,
    frequency_threshold: float,
    size_threshold: int,
    flask_available: bool,
    docker_available: bool,
    serverless_available: bool = True,
    fastest_free: Platform | None = None,
) -> Decision:
    """Where one request goes. `f_t` in requests/s, `r_d` in bytes, thresholds F and D alike."""
    if f_t > frequency_threshold and r_d < size_threshold:
        if fastest_free is not None:
            return Decision(fastest_free, Branch.FASTEST_FREE)
        if serverless_available:
            return HIGH_FREQUENCY_SMALL_DATA
    if r_d > size_threshold:
        return LARGE_DATA
    if flask_available:
        return FLASK_AVAILABLE
    if docker_available:
        return DOCKER_AVAILABLE
    return NOTHING_AVAILABLE if serverless_available else NO_CAPACITY


# The paper's order of preference among platforms (lines 11, 15, 18), which fallback follows.
PREFERENCE_ORDER = (Platform.FLASK, Platform.DOCKER, Platform.SERVERLESS)

# Ties among equally fast platforms go to line 3's own choice first, then the paper's order.
_TIE_ORDER = (Platform.SERVERLESS, Platform.FLASK, Platform.DOCKER)


def fastest(recent_p95_s: dict[Platform, float]) -> Platform | None:
    """The platform with the lowest recent p95 latency among those given (the ones with a free
    slot), or None when none is. A platform that has reported no latency yet (0) counts as
    the fastest, so it gets a request and is measured."""
    if not recent_p95_s:
        return None
    return min(recent_p95_s, key=lambda p: (recent_p95_s[p], _TIE_ORDER.index(p)))

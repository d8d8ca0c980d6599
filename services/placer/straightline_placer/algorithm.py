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
The rules built on this function, and the ones that are not, are in `rules/`.
"""

import enum
from dataclasses import dataclass


class Platform(enum.IntEnum):
    """Values equal those of straightline.v1.Platform."""

    FLASK = 1
    DOCKER = 2
    SERVERLESS = 3
    OIP = 4


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
    CHEAPEST_WITHIN_OBJECTIVE = 9
    LOWEST_PREDICTED_LATENCY = 10
    DEADLINE_UNMEETABLE = 11
    OBJECTIVE_UNMEETABLE = 12


class Rule(enum.IntEnum):
    """Values equal those of straightline.v1.PlacementRule."""

    PAPER = 1
    CAPACITY_AWARE = 2
    LATENCY_AWARE = 3
    SLO_AWARE = 4


@dataclass(frozen=True, slots=True)
class Decision:
    platform: Platform | None  # None: refused
    branch: Branch
    reason: str = ""  # why a request was refused, as the caller will read it
    # Platforms not measured yet that get a copy of the request, so that they are measured
    # without a user's request waiting on them (the copy's answer is dropped).
    mirror: tuple[Platform, ...] = ()


HIGH_FREQUENCY_SMALL_DATA = Decision(Platform.SERVERLESS, Branch.HIGH_FREQUENCY_SMALL_DATA)
LARGE_DATA = Decision(Platform.DOCKER, Branch.LARGE_DATA)
FLASK_AVAILABLE = Decision(Platform.FLASK, Branch.FLASK_AVAILABLE)
DOCKER_AVAILABLE = Decision(Platform.DOCKER, Branch.DOCKER_AVAILABLE)
NOTHING_AVAILABLE = Decision(Platform.SERVERLESS, Branch.NOTHING_AVAILABLE)
NO_CAPACITY = Decision(None, Branch.NO_CAPACITY)


_LABELS: dict[Platform | None, str] = {p: p.name.lower() for p in Platform} | {None: "none"}


def platform_label(platform: Platform | None) -> str:
    """The platform's name in metrics and spans; "none" for a refused request."""
    return _LABELS[platform]


def place(
    f_t: float,
    r_d: int,
    frequency_threshold: float,
    size_threshold: int,
    flask_available: bool,
    docker_available: bool,
    serverless_available: bool = True,
) -> Decision:
    """Where one request goes. `f_t` in requests/s, `r_d` in bytes, thresholds F and D alike."""
    if serverless_available and is_hot_and_small(f_t, r_d, frequency_threshold, size_threshold):
        return HIGH_FREQUENCY_SMALL_DATA
    if r_d > size_threshold:
        return LARGE_DATA
    if flask_available:
        return FLASK_AVAILABLE
    if docker_available:
        return DOCKER_AVAILABLE
    return NOTHING_AVAILABLE if serverless_available else NO_CAPACITY


def is_hot_and_small(f_t: float, r_d: int, frequency_threshold: float, size_threshold: int) -> bool:
    """Line 3's condition: f_t > F and r_d < D."""
    return f_t > frequency_threshold and r_d < size_threshold

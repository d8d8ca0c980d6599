"""How long an invocation takes on AWS Lambda, drawn from measurements made on this machine
and AWS's published behaviour (README.md gives the sources)."""

import math
import random
from dataclasses import dataclass

# Lambda gives a function vCPU in proportion to its memory: one full vCPU at 1,769 MB.
MB_PER_VCPU = 1769


@dataclass(frozen=True)
class ModelTiming:
    """One image's service time (decode + predict) measured here, at `reference_vcpus`, and
    how many vCPUs the model can use at once for one image."""

    seconds: float
    reference_vcpus: float
    max_useful_vcpus: float
    # Spread of service times (lognormal sigma) and of cold starts around their median.
    sigma: float
    cold_start_s: float
    cold_start_sigma: float


# Measured on this machine (docs/evaluation.md, "capacity first": one image in-process through
# the warm tf.function path, 2 cores): the small 32 px classifier 0.9 ms, Xception at 299 px
# 60.8 ms. Cold starts of the Lambda image under AWS's emulator, from a new environment to
# its first answer (BENCHMARKS.md, inference): 1.6 s (small), 2.5 s (Xception).
MODELS = {
    "small": ModelTiming(0.0009, 2, 1, 0.15, 1.6, 0.2),
    "xception": ModelTiming(0.0608, 2, 2, 0.10, 2.5, 0.2),
}


@dataclass(frozen=True)
class Calibration:
    timing: ModelTiming
    memory_mb: int = 2048
    # Round trip between the caller and the Lambda endpoint (same region): median and spread.
    round_trip_s: float = 0.020
    round_trip_sigma: float = 0.25

    @property
    def vcpus(self) -> float:
        return self.memory_mb / MB_PER_VCPU

    @property
    def median_service_s(self) -> float:
        """The measured time scaled from the reference vCPUs to this memory's."""
        timing = self.timing
        usable = min(self.vcpus, timing.max_useful_vcpus)
        return timing.seconds * min(timing.reference_vcpus, timing.max_useful_vcpus) / usable

    def service_s(self, rng: random.Random) -> float:
        """One invocation's service time."""
        return _lognormal(rng, self.median_service_s, self.timing.sigma)

    def cold_start_s(self, rng: random.Random) -> float:
        return _lognormal(rng, self.timing.cold_start_s, self.timing.cold_start_sigma)

    def round_trip(self, rng: random.Random) -> float:
        return _lognormal(rng, self.round_trip_s, self.round_trip_sigma) if self.round_trip_s else 0


def _lognormal(rng: random.Random, median: float, sigma: float) -> float:
    return median * math.exp(rng.gauss(0.0, sigma))

"""The configuration at 100 times this machine, and its arrival trace: a diurnal curve
compressed into the run, with spikes, request sizes drawn from the data set."""

import math
import random
from pathlib import Path

from bench.harness.images import CONTENT_TYPES
from bench.lambda_service.calibration import MODELS, Calibration
from bench.simulator.platforms import PlatformConfig
from straightline_placer.algorithm import Platform

XCEPTION = MODELS["xception"]
LAMBDA = Calibration(XCEPTION, memory_mb=2048, round_trip_s=0.020)
# Decoding and resizing a JPEG before the model: about 20 ms per MB on this machine's cores.
_DECODE_S_PER_MB = 0.020


def platforms(scale: int = 1) -> tuple[PlatformConfig, ...]:
    """Xception on `scale` x (20 Flask servers of 2 threads, 50 Docker hosts of up to 4
    one-slot containers) and one Lambda function of 1,000 concurrent executions. Flask's model
    server batches, as StraightLine's does by default: one batch at a time."""
    service = XCEPTION.seconds
    return (
        PlatformConfig(Platform.FLASK, 20 * scale, environments=1, slots=2, queue_limit=4,
                       service_s=service, service_sigma=XCEPTION.sigma,
                       seconds_per_mb=_DECODE_S_PER_MB, runs_per_environment=1),
        PlatformConfig(Platform.DOCKER, 50 * scale, environments=4, slots=1, queue_limit=8,
                       service_s=service, service_sigma=XCEPTION.sigma,
                       seconds_per_mb=_DECODE_S_PER_MB, cold_start_s=2.7,
                       cold_start_sigma=0.2, min_warm=1, reap_after_s=60.0),
        PlatformConfig(Platform.SERVERLESS, 1, environments=1000, slots=1, queue_limit=0,
                       service_s=LAMBDA.median_service_s,
                       service_sigma=XCEPTION.sigma, seconds_per_mb=_DECODE_S_PER_MB,
                       round_trip_s=LAMBDA.round_trip_s, cold_start_s=XCEPTION.cold_start_s,
                       cold_start_sigma=XCEPTION.cold_start_sigma, reap_after_s=600.0),
    )  # fmt: skip


def local_capacity_rps(configs: tuple[PlatformConfig, ...]) -> float:
    """What the local platforms (Flask, Docker) answer per second at most."""
    return sum(
        c.instances * c.environments * (c.runs_per_environment or c.slots) / c.service_s
        for c in configs
        if c.platform != Platform.SERVERLESS
    )


def rate(t: float, seconds: float, low: float, high: float, spikes: float) -> float:
    """A day compressed into `seconds`: night at `low`, midday at `high`; a spike of `spikes`
    times the rate for the second tenth of every fifth of the run."""
    day = low + (high - low) * (1 - math.cos(2 * math.pi * t / seconds)) / 2
    in_spike = (t % (seconds / 5)) / (seconds / 5)
    return day * (spikes if 0.1 <= in_spike < 0.2 else 1.0)


def arrivals(seconds: float, low: float, high: float, spikes: float, seed: int) -> list[float]:
    """Poisson arrivals at `rate(t)` (by thinning), in order."""
    rng = random.Random(seed)
    peak = high * spikes
    times, t = [], 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= seconds:
            return times
        if rng.random() * peak <= rate(t, seconds, low, high, spikes):
            times.append(t)


def sizes(folder: Path, count: int, seed: int) -> list[int]:
    """`count` request sizes drawn from the images of `folder` (their sizes only)."""
    found = [
        p.stat().st_size for p in sorted(folder.rglob("*")) if p.suffix.lower() in CONTENT_TYPES
    ]
    if not found:
        raise ValueError(f"{folder} holds no JPEG or PNG image")
    rng = random.Random(seed)
    return [rng.choice(found) for _ in range(count)]

"""Simulated adapter instances: environments with slots, a bounded queue, cold starts and
idle reaping, as the adapters' pools and gates behave; service times from a calibration. Each
keeps the adapters' own statistics (`straightline_inference.stats.RecentStats`) and reports
them as a heartbeat does."""

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from straightline.v1 import types_pb2
from straightline_inference.adapter.backend import Capacity, fill_capacity
from straightline_inference.stats import RecentStats
from straightline_placer.algorithm import Platform


@dataclass(frozen=True)
class PlatformConfig:
    """One kind of instance. Service time: a lognormal around `service_s` (sigma
    `service_sigma`) plus `seconds_per_mb` for the payload, plus `round_trip_s` (remote)."""

    platform: Platform
    instances: int
    environments: int  # most environments an instance runs at once
    slots: int  # requests an environment runs at once
    queue_limit: int
    service_s: float
    service_sigma: float = 0.0
    seconds_per_mb: float = 0.0
    round_trip_s: float = 0.0
    cold_start_s: float = 0.0  # 0: environments are always warm (a process started once)
    cold_start_sigma: float = 0.0
    min_warm: int = 0
    reap_after_s: float = 60.0
    # Requests an environment runs through the model at once; 0: all its slots. A model
    # server that batches runs one batch at a time (1): a request on a free slot waits.
    runs_per_environment: int = 0

    def service(self, size: int, rng: random.Random) -> float:
        spread = math.exp(rng.gauss(0.0, self.service_sigma)) if self.service_sigma else 1.0
        return self.service_s * spread + size / 1e6 * self.seconds_per_mb

    def cold_start(self, rng: random.Random) -> float:
        spread = math.exp(rng.gauss(0.0, self.cold_start_sigma)) if self.cold_start_sigma else 1
        return self.cold_start_s * spread


@dataclass
class Job:
    size: int
    arrived: float
    done: Callable[["Job", float, float, float], None]  # (job, finished, queued, cold)
    queued: float = 0.0
    cold: float = 0.0


@dataclass(eq=False)
class Environment:
    busy: int = 0  # slots taken
    last_used: float = 0.0
    ready: bool = True
    running: int = 0  # of them, running through the model
    held: deque = field(default_factory=deque)  # on a slot, waiting for a run to end


@dataclass(eq=False)
class SimInstance:
    instance_id: str
    config: PlatformConfig
    engine: object
    rng: random.Random
    environments: list[Environment] = field(default_factory=list)
    waiting: deque = field(default_factory=deque)
    stats: RecentStats = field(init=False)

    def __post_init__(self):
        self.stats = RecentStats(clock=self.engine.clock)
        # Every environment warm at the start, as the harness's warm-up leaves a real stack;
        # the idle ones are reaped from then on.
        self.environments = [
            Environment(last_used=self.engine.now) for _ in range(self.config.environments)
        ]

    # Requests ----------------------------------------------------------------------------

    def submit(self, job: Job) -> bool:
        """Runs, starts an environment for, or queues the job; False: refused (full)."""
        environment = self._free_environment()
        if environment is not None:
            self._run(environment, job)
            return True
        if len(self.environments) < self.config.environments:
            self._start_environment(job)
            return True
        if len(self.waiting) < self.config.queue_limit + self._spare_starting_slots():
            self.waiting.append(job)
            return True
        self.stats.record_failure()
        return False

    def _free_environment(self) -> Environment | None:
        free = [e for e in self.environments if e.ready and e.busy < self.config.slots]
        return min(free, key=lambda e: e.busy) if free else None

    def _spare_starting_slots(self) -> int:
        return sum(self.config.slots - e.busy for e in self.environments if not e.ready)

    def _start_environment(self, job: Job) -> None:
        environment = Environment(busy=1, ready=False)
        self.environments.append(environment)
        cold = self.config.cold_start(self.rng)
        job.cold = cold
        self.engine.after(cold, self._environment_ready, environment, job)

    def _environment_ready(self, environment: Environment, job: Job) -> None:
        environment.ready = True
        environment.busy -= 1
        self._run(environment, job)
        self._drain(environment)

    def _run(self, environment: Environment, job: Job) -> None:
        environment.busy += 1
        runs = self.config.runs_per_environment
        if runs and environment.running >= runs:
            environment.held.append(job)
        else:
            self._start_run(environment, job)

    def _start_run(self, environment: Environment, job: Job) -> None:
        environment.running += 1
        job.queued = self.engine.now - job.arrived - job.cold
        service = self.config.service(job.size, self.rng) + self.config.round_trip_s
        self.engine.after(service, self._finish, environment, job)

    def _finish(self, environment: Environment, job: Job) -> None:
        environment.busy -= 1
        environment.running -= 1
        environment.last_used = self.engine.now
        total = self.engine.now - job.arrived
        self.stats.record(job.size, total, job.queued, job.cold)
        job.done(job, self.engine.now, job.queued, job.cold)
        if environment.held:
            self._start_run(environment, environment.held.popleft())
        self._drain(environment)

    def _drain(self, environment: Environment) -> None:
        while self.waiting and environment.busy < self.config.slots:
            self._run(environment, self.waiting.popleft())

    # Heartbeats --------------------------------------------------------------------------

    def reap(self) -> None:
        """Stops environments idle past the reap time, down to the minimum kept warm; those of
        a platform without cold starts (a process started once) are never reaped."""
        if not self.config.cold_start_s:
            return
        idle = [
            e
            for e in self.environments
            if e.ready and e.busy == 0 and self.engine.now - e.last_used > self.config.reap_after_s
        ]
        for environment in idle[: max(0, len(self.environments) - self.config.min_warm)]:
            self.environments.remove(environment)

    def report(self) -> types_pb2.InstanceReport:
        """What the adapter's heartbeat would carry now."""
        config = self.config
        ready = [e for e in self.environments if e.ready]
        busy = sum(e.busy for e in ready)
        total = config.environments * config.slots
        room = config.environments - len(self.environments)
        report = types_pb2.InstanceReport(instance_id=self.instance_id, platform=config.platform)
        capacity = Capacity(
            total=total,
            free=max(0, len(ready) * config.slots - busy + room * config.slots),
            in_flight=busy,
            queue_depth=len(self.waiting),
            queue_limit=config.queue_limit,
            warm_environments=len(ready),
            warm_slots=len(ready) * config.slots,
            runs_per_environment=config.runs_per_environment,
        )
        fill_capacity(report, capacity)
        self.stats.fill(report)
        return report

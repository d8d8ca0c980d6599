"""One simulated run: the placer's real core on a virtual clock, simulated instances that
heartbeat to its registry, and an open-loop arrival sequence. Each request becomes the same
Record the harness writes for a real run, so the harness's summaries, targets and figures
read both alike."""

import random
from dataclasses import dataclass

from bench.harness.generator import Record
from bench.simulator.engine import Engine
from bench.simulator.platforms import Job, PlatformConfig, SimInstance
from straightline_placer.algorithm import platform_label
from straightline_placer.core import Placer, Request
from straightline_placer.metrics import PlacerMetrics
from straightline_placer.policy import Policy
from straightline_placer.servicer import stats_of

MODEL = "model"


@dataclass(frozen=True)
class Scenario:
    platforms: tuple[PlatformConfig, ...]
    arrivals: tuple[float, ...]  # send times, seconds
    sizes: tuple[int, ...]  # request sizes, one per arrival
    # What the two gRPC hops (client -> placer -> adapter and back) add to every answer.
    hops_s: float = 0.002
    timeout_s: float = 50.0


class Simulation:
    def __init__(self, scenario: Scenario, policy: Policy, seed: int = 1):
        self.scenario = scenario
        self.engine = Engine()
        self.placer = Placer(
            policy, forwarder=None, metrics=PlacerMetrics(), clock=self.engine.clock
        )
        rng = random.Random(seed)
        self.instances = {
            f"{platform_label(config.platform)}-{n}": SimInstance(
                f"{platform_label(config.platform)}-{n}", config, self.engine, rng
            )
            for config in scenario.platforms
            for n in range(config.instances)
        }
        self.records: list[Record] = []

    def run(self) -> list[Record]:
        interval = self.placer.policy.heartbeat_interval_s
        for offset, instance in enumerate(self.instances.values()):
            self._heartbeat(instance)  # registered before the first request
            spread = interval * offset / len(self.instances)  # not all in the same instant
            self.engine.after(spread, self._heartbeat_forever, instance, interval)
        for index, (at, size) in enumerate(
            zip(self.scenario.arrivals, self.scenario.sizes, strict=True)
        ):
            self.engine.at(at, self._arrive, index, size)
        last = self.scenario.arrivals[-1] if self.scenario.arrivals else 0.0
        self.engine.run(until=last + self.scenario.timeout_s)
        for record in self.records:
            if not record.status:  # still unanswered at its deadline
                record.status = "DEADLINE_EXCEEDED"
                record.done_s = record.sent_s + self.scenario.timeout_s
        return self.records

    # Heartbeats --------------------------------------------------------------------------

    def _heartbeat(self, instance: SimInstance) -> None:
        instance.reap()
        report = instance.report()
        self.placer.registry.report(
            instance_id=instance.instance_id,
            platform=instance.config.platform,
            address="simulated:0",
            capacity_total=report.capacity_total,
            capacity_free=report.capacity_free,
            models=[(MODEL, "1")],
            report=report,
            owner=instance,
            stats=stats_of(report),
        )

    def _heartbeat_forever(self, instance: SimInstance, interval: float) -> None:
        self._heartbeat(instance)
        if self.engine.now < self.scenario.arrivals[-1] + self.scenario.timeout_s:
            self.engine.after(interval, self._heartbeat_forever, instance, interval)

    # Requests ----------------------------------------------------------------------------

    def _arrive(self, index: int, size: int) -> None:
        now = self.engine.now
        record = Record(index, 0, "", size, scheduled_s=now, sent_s=now)
        self.records.append(record)
        request = Request("", MODEL, "", size)
        placement, instance, ticket = self.placer.admit(request)
        record.branch = placement.branch.name
        if placement.platform is None:
            return self._fail(record, "RESOURCE_EXHAUSTED")
        if instance is not None and self._send(record, placement, instance, ticket):
            self._send_copies(placement, request)
            return None
        for _platform, fallback, fallback_ticket in self.placer.fallbacks(placement, request):
            if self._send(record, placement, fallback, fallback_ticket):
                record.fell_back = True
                return None
        return self._fail(record, "UNAVAILABLE")

    def _send(self, record, placement, instance, ticket) -> bool:
        simulated = self.instances[instance.instance_id]
        state = placement.inputs.platforms.get(instance.platform)
        predicted = state.predicted_latency_s if state is not None else None

        def done(job: Job, finished: float, queued: float, cold: float) -> None:
            self.placer.registry.finish(ticket, ran=True)
            record.done_s = finished + self.scenario.hops_s
            elapsed = record.done_s - record.sent_s
            record.status = "OK" if elapsed <= self.scenario.timeout_s else "DEADLINE_EXCEEDED"
            record.platform = platform_label(instance.platform)
            record.platform_ms = (finished - job.arrived - queued) * 1e3
            record.cold_start_ms = cold * 1e3
            record.predicted_ms = (predicted or 0.0) * 1e3
            self.placer.observe_answer(placement, instance, elapsed)

        if simulated.submit(Job(record.bytes, self.engine.now, done)):
            return True
        self.placer.registry.finish(ticket, ran=False)
        return False

    def _send_copies(self, placement, request: Request) -> None:
        """The copies the rule asks for, run like requests; only the placer's calibration
        keeps their answers, as in the real core."""
        for ticket in self.placer.copies(placement, request):
            done = self._copy_done(placement, ticket)
            instance = self.instances[ticket.instance.instance_id]
            if not instance.submit(Job(request.data_size_bytes, self.engine.now, done)):
                self.placer.registry.finish(ticket, ran=False)

    def _copy_done(self, placement, ticket):
        def done(job: Job, finished: float, _queued: float, _cold: float) -> None:
            self.placer.registry.finish(ticket, ran=True)
            elapsed = finished + self.scenario.hops_s - job.arrived
            self.placer.observe_copy(placement, ticket.instance, elapsed)

        return done

    def _fail(self, record: Record, status: str) -> None:
        record.status = status
        record.done_s = self.engine.now + self.scenario.hops_s

"""The live view of adapter instances, kept from their heartbeats.

An instance is live while its last report is younger than the heartbeat timeout. Between
reports the registry counts what the placer has sent to each instance, so a burst cannot
oversubscribe it:

    effective_free = capacity_free - sent since the report (still running)
                                   + finished since the report (sent before it)

clamped to [0, capacity_total]. A request sent just before a report that the adapter had not
yet received is off by one until the next report; the heartbeat interval bounds that error.
"""

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from straightline_common.errors import AlreadyExists, NotFound
from straightline_placer.algorithm import Platform


class _HasPlatform(Protocol):
    platform: Platform


C = TypeVar("C", bound=_HasPlatform)


@dataclass(eq=False)
class Instance:
    instance_id: str
    platform: Platform
    address: str
    capacity_total: int
    capacity_free: int
    # Model name -> versions served ("" among them: whichever version is current).
    models: dict[str, frozenset[str]]
    report: object
    owner: object
    last_seen: float
    last_report_time: float = field(default_factory=time.time)
    epoch: int = 0
    sent_since_report: int = 0
    finished_from_before_report: int = 0
    stream_open: bool = True
    recent_latency_p95_s: float = 0.0  # as last reported; 0 until it has served something

    @property
    def effective_free(self) -> int:
        free = self.capacity_free - self.sent_since_report + self.finished_from_before_report
        return max(0, min(self.capacity_total, free))

    def serves(self, name: str, version: str) -> bool:
        versions = self.models.get(name)
        return versions is not None and (not version or version in versions or "" in versions)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One request sent to an instance; hand it back to `finish` when the answer is in."""

    instance: Instance
    epoch: int


@dataclass(frozen=True, slots=True)
class Departure:
    instance_id: str
    platform: Platform
    outstanding: int


class InstanceRegistry:
    def __init__(self, heartbeat_timeout: float, clock: Callable[[], float] = time.monotonic):
        self.heartbeat_timeout = heartbeat_timeout
        self._clock = clock
        self._instances: dict[str, Instance] = {}
        self._changed = threading.Condition()
        self.version = 0

    # Reports and streams -------------------------------------------------------------------

    def report(
        self,
        *,
        instance_id: str,
        platform: Platform,
        address: str,
        capacity_total: int,
        capacity_free: int,
        models: Iterable[tuple[str, str]],
        report: object,
        owner: object,
        recent_latency_p95_s: float = 0.0,
    ) -> Instance:
        """Records a heartbeat from the stream `owner`. An instance id that another open
        stream is still reporting for is refused."""
        now = self._clock()
        with self._changed:
            current = self._instances.get(instance_id)
            if current is not None and current.owner is not owner and self._claimed(current, now):
                raise AlreadyExists(
                    f"instance id {instance_id!r} is already reporting on another stream; "
                    "give every adapter instance its own id"
                )
            if current is None or current.owner is not owner:
                current = Instance(instance_id, platform, address, 0, 0, {}, None, owner, now)
                self._instances[instance_id] = current
            current.platform = platform
            current.address = address
            current.capacity_total = capacity_total
            current.capacity_free = capacity_free
            current.models = _versions_by_name(models)
            current.report = report
            current.recent_latency_p95_s = recent_latency_p95_s
            current.last_seen = now
            current.last_report_time = time.time()
            current.epoch += 1
            current.sent_since_report = 0
            current.finished_from_before_report = 0
            current.stream_open = True
            self._bump()
            return current

    def stream_closed(self, instance_id: str, owner: object) -> None:
        """A heartbeat stream ended: the instance stays until its timeout, but another stream
        may now report for it."""
        with self._changed:
            current = self._instances.get(instance_id)
            if current is not None and current.owner is owner:
                current.stream_open = False

    def leave(self, instance_id: str, owner: object) -> None:
        """The instance said it is shutting down: it leaves the view at once."""
        with self._changed:
            current = self._instances.get(instance_id)
            if current is not None and current.owner is owner:
                del self._instances[instance_id]
                self._bump()

    def expire(self) -> list[Departure]:
        """Removes instances whose last report is older than the timeout."""
        now = self._clock()
        with self._changed:
            gone = [i for i in self._instances.values() if not self._is_live(i, now)]
            for instance in gone:
                del self._instances[instance.instance_id]
            if gone:
                self._bump()
        return [Departure(i.instance_id, i.platform, i.sent_since_report) for i in gone]

    # Placement -------------------------------------------------------------------------------

    def decide(
        self,
        name: str,
        version: str,
        choose: Callable[[list[int], list[Instance | None]], C],
        *,
        reserve: bool,
    ):
        """Atomically: measures the free Flask, Docker and serverless slots (S_F, S_D, S_L)
        for the model and the instance each platform would get the request (the one with most
        free capacity; both lists indexed by Platform, None without a live instance), lets
        `choose` pick a platform from them (or none), and picks (and, if `reserve`, reserves)
        that instance.

        Returns (choose's result, instance or None, ticket or None); raises NotFound when no
        live instance serves the model."""
        now = self._clock()
        with self._changed:
            free, best = self._survey(name, version, now)
            if not any(best):
                raise NotFound(_unserved(name, version))
            choice = choose(free, best)
            instance = None if choice.platform is None else best[choice.platform]
            ticket = self._reserve(instance) if reserve and instance is not None else None
            return choice, instance, ticket

    def reserve_with_capacity(self, platform: Platform, name: str, version: str):
        """Reserves a slot on the instance of `platform` with most free capacity, if any has one."""
        now = self._clock()
        with self._changed:
            instance = self._survey(name, version, now)[1][platform]
            if instance is None or instance.effective_free == 0:
                return None
            return self._reserve(instance)

    def finish(self, ticket: Ticket) -> None:
        with self._changed:
            instance = ticket.instance
            if self._instances.get(instance.instance_id) is not instance:
                return
            if ticket.epoch == instance.epoch:
                instance.sent_since_report -= 1
            else:
                instance.finished_from_before_report += 1

    # The live view ---------------------------------------------------------------------------

    def live(self) -> list[Instance]:
        now = self._clock()
        with self._changed:
            return sorted(
                (i for i in self._instances.values() if self._is_live(i, now)),
                key=lambda i: (i.platform, i.instance_id),
            )

    def wait_for_change(self, seen_version: int, timeout: float) -> int:
        """Blocks until the view changes after `seen_version` or `timeout` passes; returns the
        current version."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen_version, timeout)
            return self.version

    # Internals (called with the lock held) ---------------------------------------------------

    def _is_live(self, instance: Instance, now: float) -> bool:
        return now - instance.last_seen <= self.heartbeat_timeout

    def _claimed(self, instance: Instance, now: float) -> bool:
        return instance.stream_open and self._is_live(instance, now)

    def _survey(self, name: str, version: str, now: float):
        """For the model, in one pass over live instances: free slots per platform, and the
        instance with most free capacity per platform. Both lists are indexed by Platform."""
        free = [0, 0, 0, 0]
        best: list[Instance | None] = [None, None, None, None]
        for instance in self._instances.values():
            if now - instance.last_seen > self.heartbeat_timeout or not instance.serves(
                name, version
            ):
                continue
            platform, instance_free = instance.platform, instance.effective_free
            free[platform] += instance_free
            current = best[platform]
            if current is None or instance_free > current.effective_free:
                best[platform] = instance
        return free, best

    @staticmethod
    def _reserve(instance: Instance) -> Ticket:
        instance.sent_since_report += 1
        return Ticket(instance, instance.epoch)

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()


def _unserved(name: str, version: str) -> str:
    model = f"{name!r} version {version!r}" if version else repr(name)
    return (
        f"no live instance serves model {model}; check the name, or that an adapter "
        "serving it is running and heartbeating"
    )


def _versions_by_name(models: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    versions: dict[str, set[str]] = {}
    for name, version in models:
        versions.setdefault(name, set()).add(version)
    return {name: frozenset(served) for name, served in versions.items()}

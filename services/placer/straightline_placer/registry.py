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
    models: frozenset[tuple[str, str]]
    report: object
    owner: object
    last_seen: float
    last_report_time: float = field(default_factory=time.time)
    epoch: int = 0
    sent_since_report: int = 0
    finished_from_before_report: int = 0
    stream_open: bool = True

    @property
    def effective_free(self) -> int:
        free = self.capacity_free - self.sent_since_report + self.finished_from_before_report
        return max(0, min(self.capacity_total, free))

    def serves(self, name: str, version: str) -> bool:
        if not version:
            return any(served_name == name for served_name, _ in self.models)
        return (name, version) in self.models or (name, "") in self.models


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
                current = Instance(
                    instance_id, platform, address, 0, 0, frozenset(), None, owner, now
                )
                self._instances[instance_id] = current
            current.platform = platform
            current.address = address
            current.capacity_total = capacity_total
            current.capacity_free = capacity_free
            current.models = frozenset(models)
            current.report = report
            current.last_seen = now
            current.last_report_time = time.time()
            current.epoch += 1
            current.sent_since_report = 0
            current.finished_from_before_report = 0
            current.stream_open = True
            self._bump()
            return current

    def stream_closed(self, instance_id: str, owner: object, *, clean: bool) -> None:
        """A heartbeat stream ended. A clean end removes the instance at once; otherwise it
        stays until its heartbeat timeout, as if it had stopped sending."""
        with self._changed:
            current = self._instances.get(instance_id)
            if current is None or current.owner is not owner:
                return
            current.stream_open = False
            if clean:
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

    def decide(self, name: str, version: str, choose: Callable[[int, int], C], *, reserve: bool):
        """Atomically: measures the free Flask and Docker slots (S_F, S_D) for the model, lets
        `choose` pick a platform from them, and picks (and, if `reserve`, reserves) the
        instance of that platform with most free capacity.

        Returns (choose's result, instance or None, ticket or None); raises NotFound when no
        live instance serves the model."""
        now = self._clock()
        with self._changed:
            flask_free, docker_free, known = self._free_slots(name, version, now)
            if not known:
                raise NotFound(_unserved(name, version))
            choice = choose(flask_free, docker_free)
            instance = self._best(choice.platform, name, version, now)
            ticket = self._reserve(instance) if reserve and instance is not None else None
            return choice, instance, ticket

    def reserve_with_capacity(self, platform: Platform, name: str, version: str):
        """Reserves a slot on the instance of `platform` with most free capacity, if any has one."""
        now = self._clock()
        with self._changed:
            instance = self._best(platform, name, version, now)
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

    def _free_slots(self, name: str, version: str, now: float) -> tuple[int, int, bool]:
        flask = docker = 0
        known = False
        for instance in self._instances.values():
            if not self._is_live(instance, now) or not instance.serves(name, version):
                continue
            known = True
            if instance.platform == Platform.FLASK:
                flask += instance.effective_free
            elif instance.platform == Platform.DOCKER:
                docker += instance.effective_free
        return flask, docker, known

    def _best(self, platform: Platform, name: str, version: str, now: float) -> Instance | None:
        best = None
        for instance in self._instances.values():
            if (
                instance.platform == platform
                and self._is_live(instance, now)
                and instance.serves(name, version)
                and (best is None or instance.effective_free > best.effective_free)
            ):
                best = instance
        return best

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

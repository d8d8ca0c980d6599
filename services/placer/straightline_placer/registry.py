"""The live view of adapter instances, kept from their heartbeats.

An instance is live while its last report is younger than the heartbeat timeout. Between
reports the registry counts what the placer has sent to each instance, so a burst cannot
oversubscribe it:

    effective_free = capacity_free - sent since the report (still running)
                     + finished since the report (sent before it) beyond the reported queue

clamped to [0, capacity_total]: while the instance had requests waiting when it reported,
each slot that frees up goes to one of them, not to a new request. A request sent just
before a report that the adapter had not yet received is off by one until the next report;
the heartbeat interval bounds that error.
"""

import bisect
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from straightline_common.errors import AlreadyExists, NotFound, PermissionDenied
from straightline_placer.algorithm import Platform
from straightline_placer.calibration import PredictionErrors
from straightline_placer.recollection import Recollection


class _HasPlatform(Protocol):
    @property
    def platform(self) -> Platform | None: ...


C = TypeVar("C", bound=_HasPlatform)


BASE_EJECTION_S = 1.0
MAX_EJECTION_S = 30.0


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """What an instance reports beyond its capacity: what a prediction of its latency needs."""

    in_flight: int = 0
    queue_depth: int = 0
    queue_limit: int = 0
    warm_environments: int = 0
    warm_slots: int = 0
    runs_per_environment: int = 0  # 0: as many as its slots
    recent_latency_p50_s: float = 0.0
    recent_latency_p95_s: float = 0.0  # 0 until it has served something
    recent_cold_start_s: float = 0.0
    # Upper bounds of the size buckets (bytes; the last has no bound), their medians and
    # slowest, and how many requests each is over.
    service_time_bounds: tuple[int, ...] = ()
    service_time_medians_s: tuple[float, ...] = ()
    service_time_slowest_s: tuple[float, ...] = ()
    service_time_counts: tuple[int, ...] = ()

    @property
    def measured(self) -> bool:
        """Whether the instance reported any recent request (adapters forget old ones)."""
        return bool(self.service_time_counts) or self.recent_latency_p50_s > 0

    def service_time_s(self, size: int) -> float:
        """The median service time of requests of about this size: from its bucket, or the
        nearest bucket with requests, or the recent median; 0 when nothing was measured."""
        return self._by_size(self.service_time_medians_s, size, self.recent_latency_p50_s)

    def slowest_service_time_s(self, size: int) -> float:
        """The same for the slowest recent request (from adapters that report no slowest:
        their p95 or median; without buckets, the recent p95)."""
        recent = max(self.recent_latency_p95_s, self.recent_latency_p50_s)
        return self._by_size(self.service_time_slowest_s, size, recent)

    def _bucket(self, size: int, buckets: int) -> int:
        return min(bisect.bisect_left(self.service_time_bounds, size), buckets - 1)

    def _by_size(self, per_bucket: tuple[float, ...], size: int, otherwise: float) -> float:
        if not per_bucket:
            return otherwise
        return per_bucket[self._bucket(size, len(per_bucket))]


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
    stats: InstanceStats = InstanceStats()
    identity: str = ""  # of the caller that registered it
    # Outlier ejection: failures in a row, and until when it is out of the placer's choices.
    ejections: int = 0
    ejected_until: float = 0.0
    recollection: Recollection[InstanceStats] = field(default_factory=Recollection)
    prediction_errors: PredictionErrors = field(default_factory=PredictionErrors)

    @property
    def effective_free(self) -> int:
        return max(0, min(self.capacity_total, self.unreserved))

    @property
    def unreserved(self) -> int:
        """Free slots as reported, less what was sent since, plus the slots freed since that
        the reported queue did not take; below zero, the requests sent beyond the free slots,
        which wait in the instance's queue."""
        drained = self.finished_from_before_report - self.stats.queue_depth
        return self.capacity_free - self.sent_since_report + (drained if drained > 0 else 0)

    @property
    def reported_queue_left(self) -> int:
        """Of the requests waiting at the last report, those that have not started since (as
        many have started as requests from before the report have finished)."""
        left = self.stats.queue_depth - self.finished_from_before_report
        return left if left > 0 else 0

    def serves(self, name: str, version: str) -> bool:
        versions = self.models.get(name)
        return versions is not None and (not version or version in versions or "" in versions)


@dataclass(slots=True)
class PlatformState:
    """One platform summed over its live instances (for one model, or all): what the rules
    read. `instance` is the one a request would go to: the one with most free slots, or, when
    none has one, most room in its queue (`instance_queued` and `instance_queue_room` are its
    own); the predictions are filled by the placer for the rules that ask for them."""

    platform: Platform
    instance: Instance
    free_slots: int = 0
    capacity_total: int = 0
    queue_depth: int = 0
    queue_room: int = 0
    in_flight: int = 0
    warm_environments: int = 0
    warm_free_slots: int = 0
    predicted_latency_s: float | None = None  # None: not predicted, or it cannot take it
    predicted_cost_usd: float = 0.0
    # Added to the prediction for the rule's test against the objective (calibration.py).
    margin_s: float = 0.0
    host: str = ""  # the host named in the platform's settings, when it shares one
    load_level: int = 0  # requests running on that host now, up to its cores
    unmeasured: bool = False  # no recent figures, reported or recalled
    spare_core: bool = False  # a free slot on a shared host with a core nothing runs on
    probing: bool = False  # unmeasured, with a request already on its way there
    errors_known: int = 0  # recent prediction errors at its load level
    calibrated: bool = False  # enough of them for a margin at the attainment target
    instance_queued: int = 0
    instance_queue_room: int = 0
    _instance_free: int = -1

    @property
    def busy(self) -> bool:
        """Whether a request (or a copy) is on its way to, or running on, its instance."""
        return self.instance.sent_since_report > 0 or self.instance.stats.in_flight > 0

    def add(self, instance: Instance) -> None:
        # Conditional expressions rather than min/max: this runs per instance per request.
        stats, unreserved, total = instance.stats, instance.unreserved, instance.capacity_total
        free = 0 if unreserved < 0 else total if unreserved > total else unreserved
        queued = instance.reported_queue_left - (unreserved if unreserved < 0 else 0)
        room = stats.queue_limit - queued
        room = room if room > 0 else 0
        warm_free = stats.warm_slots - total + free
        self.free_slots += free
        self.capacity_total += total
        self.queue_depth += queued
        self.queue_room += room
        self.in_flight += stats.in_flight
        self.warm_environments += stats.warm_environments
        self.warm_free_slots += 0 if warm_free < 0 else free if warm_free > free else warm_free
        if free > self._instance_free or (
            free == self._instance_free == 0 and room > self.instance_queue_room
        ):
            self.instance, self._instance_free = instance, free
            self.instance_queued, self.instance_queue_room = queued, room

    @property
    def recent_latency_p95_s(self) -> float:
        return self.instance.stats.recent_latency_p95_s


def summarize(
    instances: Iterable[Instance], order: Iterable[Platform]
) -> dict[Platform, PlatformState]:
    """The platforms of these instances, in `order`; a platform without one is left out."""
    states: dict[Platform, PlatformState] = {}
    for instance in instances:
        state = states.get(instance.platform)
        if state is None:
            state = states[instance.platform] = PlatformState(instance.platform, instance)
        state.add(instance)
    return {platform: states[platform] for platform in order if platform in states}


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
    def __init__(
        self,
        heartbeat_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        gathering_s: float = 0.0,
    ) -> None:
        """For `gathering_s` of real time from now the view is still filling (a restarted
        placer, its adapters reconnecting): a request for a model no instance serves waits
        for one then, rather than being refused as unknown."""
        self.heartbeat_timeout = heartbeat_timeout
        self._clock = clock
        self._gathering_until = time.monotonic() + gathering_s
        self._instances: dict[str, Instance] = {}
        # (model, version) -> the instances that serve it, live or not; rebuilt when an
        # instance comes, goes or changes what it serves. Only served models are kept.
        self._serving: dict[tuple[str, str], list[Instance]] = {}
        self._changed = threading.Condition()
        self.version = 0

    @property
    def gathering(self) -> bool:
        """Whether the view may still be filling, so that a decision may wait for it."""
        return time.monotonic() < self._gathering_until

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
        stats: InstanceStats = InstanceStats(),
        identity: str = "",
    ) -> Instance:
        """Records a heartbeat from the stream `owner`, of the caller `identity`. An instance
        id that another open stream is still reporting for is refused; so is one that another
        identity registered, until its heartbeats time out (a stranger cannot take over an
        instance while its adapter restarts)."""
        now = self._clock()
        with self._changed:
            current = self._instances.get(instance_id)
            if current is not None and current.owner is not owner:
                self._check_claim(current, identity, now)
                current = None
            if current is None:
                current = Instance(
                    instance_id,
                    platform,
                    address,
                    0,
                    0,
                    {},
                    None,
                    owner,
                    now,
                    identity=identity,
                    prediction_errors=PredictionErrors(self._clock),
                )
                self._instances[instance_id] = current
                self._serving.clear()
            served = _versions_by_name(models)
            if served != current.models or platform != current.platform:
                self._serving.clear()
            current.platform = platform
            current.address = address
            current.capacity_total = capacity_total
            current.capacity_free = capacity_free
            current.models = served
            current.report = report
            current.stats = stats
            current.last_seen = now
            current.last_report_time = time.time()
            current.epoch += 1
            current.sent_since_report = 0
            current.finished_from_before_report = 0
            current.stream_open = True
            self._bump()
            return current

    def check_may_report(self, instance_id: str, owner: object, identity: str) -> None:
        """Raises as `report` would for an instance id that is not this stream's to report."""
        with self._changed:
            current = self._instances.get(instance_id)
            if current is not None and current.owner is not owner:
                self._check_claim(current, identity, self._clock())

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
                self._serving.clear()
                self._bump()

    def expire(self) -> list[Departure]:
        """Removes instances whose last report is older than the timeout."""
        now = self._clock()
        with self._changed:
            gone = [i for i in self._instances.values() if not self._is_live(i, now)]
            for instance in gone:
                del self._instances[instance.instance_id]
            if gone:
                self._serving.clear()
                self._bump()
        return [Departure(i.instance_id, i.platform, i.sent_since_report) for i in gone]

    # Placement -------------------------------------------------------------------------------

    def decide(
        self,
        name: str,
        version: str,
        choose: Callable[[dict[Platform, PlatformState]], C],
        order: Iterable[Platform],
        *,
        reserve: bool,
        wait: bool = True,
    ) -> tuple[C, Instance | None, Ticket | None]:
        """Atomically: sums up each platform's live instances serving the model (free slots,
        queues, the instance a request would go to: the one with most free slots), in
        `order`, lets `choose` pick a platform from them (or none), and picks (and, if
        `reserve`, reserves) that platform's instance.

        Returns (choose's result, instance or None, ticket or None); raises NotFound when no
        live instance serves the model (with `wait`, while the view is gathering, once it
        has waited for one)."""
        now = self._clock()
        with self._changed:
            states = self._survey(name, version, now, order)
            while not states and wait and self._wait_while_gathering():
                states = self._survey(name, version, self._clock(), order)
            if not states:
                raise NotFound(unserved(name, version))
            choice = choose(states)
            state = None if choice.platform is None else states.get(choice.platform)
            instance = None if state is None else state.instance
            ticket = self._reserve(instance) if reserve and instance is not None else None
            return choice, instance, ticket

    def reserve_with_capacity(
        self, platform: Platform, name: str, version: str, *, or_queue: bool = False
    ) -> Ticket | None:
        """Reserves a slot on the instance of `platform` with most free capacity, if any has
        one; with `or_queue`, else a place in the queue of the one with most queue room."""
        now = self._clock()
        with self._changed:
            state = self._survey(name, version, now, (platform,)).get(platform)
            if state is None:
                return None
            if state.instance.effective_free == 0 and not (or_queue and state.instance_queue_room):
                return None
            return self._reserve(state.instance)

    def finish(self, ticket: Ticket, *, ran: bool) -> None:
        """The request is done with its instance; `ran`: it held one of the instance's slots
        (False: the instance refused it, so its end frees nothing)."""
        with self._changed:
            instance = ticket.instance
            if self._instances.get(instance.instance_id) is not instance:
                return
            if ticket.epoch == instance.epoch:
                instance.sent_since_report -= 1
            elif ran:
                instance.finished_from_before_report += 1

    # Outliers --------------------------------------------------------------------------------

    def record_failure(self, instance: Instance) -> float:
        """The instance failed a request: it leaves the placer's choices for an interval that
        doubles with each failure in a row (1 s, 2 s, ... 30 s; Envoy's outlier ejection with
        one failure as the trigger); returns the interval."""
        with self._changed:
            instance.ejections += 1
            interval = min(MAX_EJECTION_S, BASE_EJECTION_S * 2.0 ** (instance.ejections - 1))
            instance.ejected_until = self._clock() + interval
            self._bump()
            return interval

    def record_success(self, instance: Instance) -> None:
        if instance.ejections:
            with self._changed:
                instance.ejections = 0

    # The live view ---------------------------------------------------------------------------

    def live(self) -> list[Instance]:
        now = self._clock()
        with self._changed:
            return sorted(
                (i for i in self._instances.values() if self._is_live(i, now)),
                key=lambda i: (i.platform, i.instance_id),
            )

    # Internals (called with the lock held) ---------------------------------------------------

    def _is_live(self, instance: Instance, now: float) -> bool:
        return now - instance.last_seen <= self.heartbeat_timeout

    def _check_claim(self, instance: Instance, identity: str, now: float) -> None:
        if not self._is_live(instance, now):
            return
        if instance.identity != identity:
            raise PermissionDenied(
                f"instance id {instance.instance_id!r} belongs to another adapter identity "
                "until its heartbeats time out; give every adapter instance its own id"
            )
        if instance.stream_open:
            raise AlreadyExists(
                f"instance id {instance.instance_id!r} is already reporting on another stream; "
                "give every adapter instance its own id"
            )

    def _survey(
        self, name: str, version: str, now: float, order: Iterable[Platform]
    ) -> dict[Platform, PlatformState]:
        """The platforms of the live instances serving the model, in `order`."""
        key = (name, version)
        serving = self._serving.get(key)
        if serving is None:
            serving = [i for i in self._instances.values() if i.serves(name, version)]
            if serving:
                self._serving[key] = serving
        oldest = now - self.heartbeat_timeout
        live = [i for i in serving if i.last_seen >= oldest]
        # Ejected instances are left out, unless that leaves none (Envoy's panic mode).
        choices = [i for i in live if i.ejected_until <= now] or live
        return summarize(choices, order)

    @staticmethod
    def _reserve(instance: Instance) -> Ticket:
        instance.sent_since_report += 1
        return Ticket(instance, instance.epoch)

    def _wait_while_gathering(self) -> bool:
        """Waits (holding no lock) for the view to change, if it is still gathering."""
        left = self._gathering_until - time.monotonic()
        if left <= 0:
            return False
        self._changed.wait(left)
        return True

    def _bump(self) -> None:
        self.version += 1
        self._changed.notify_all()


def unserved(name: str, version: str) -> str:
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

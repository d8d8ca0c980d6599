"""The placer's core: Algorithm 1 over the live view, forwarding with fallback, the policy.

Nothing here knows gRPC: requests come in as plain values, answers go out as dataclasses, and
problems are domain errors (straightline_common.errors). The servicer translates. Forwarding
is asyncio: a request on its way to an instance holds no thread, only a task on the server's
event loop; deciding is plain, short code under the registry's lock.
"""

import asyncio
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from opentelemetry import trace

from straightline.v1 import inference_pb2
from straightline_common.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from straightline_common.names import check_model
from straightline_placer import prediction, rules
from straightline_placer.algorithm import Branch, Decision, Platform, platform_label
from straightline_placer.frequency import FrequencyWindow
from straightline_placer.metrics import PlacerMetrics
from straightline_placer.policy import MAX_REQUEST_BYTES, Policy
from straightline_placer.prediction import Objective
from straightline_placer.registry import (
    Instance,
    InstanceRegistry,
    PlatformState,
    Ticket,
    unserved,
)
from straightline_placer.rules import Inputs, Need, PlacementRule

log = logging.getLogger(__name__)
tracer = trace.get_tracer("straightline.placer")

# The most requests one PlaceBatch may hold.
MAX_BATCH = 10_000
# While a request may still fall back, one attempt may take at most this share of the time
# left before its deadline (and at least MIN_ATTEMPT_S): a hung instance costs one attempt,
# and the request still has time for another platform.
ATTEMPT_SHARE = 0.5
MIN_ATTEMPT_S = 1.0
# How often a request for a model not in view yet looks again while the view is gathering.
GATHERING_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Request:
    """One request to place: its model and r_d, and, for the SLO-aware rule, its own latency
    objective (None: the policy's for the model) and deadline (None: none), in seconds."""

    request_id: str
    model_name: str
    model_version: str
    data_size_bytes: int
    latency_objective_s: float | None = None
    deadline_s: float | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    request_id: str
    platform: Platform | None  # None: refused (Decision.reason says why)
    branch: Branch
    reason: str
    inputs: Inputs
    instance_id: str
    instance_address: str
    decision_seconds: float
    mirror: tuple[Platform, ...] = ()  # platforms that get a copy to be measured by


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    platform: Platform
    instance_id: str
    error: ServiceError | None
    seconds: float


@dataclass
class InferResult:
    placement: Placement
    answer: Any  # what the forwarder returned (the adapter's PredictResponse)
    served_platform: Platform
    served_instance_id: str
    attempts: list[AttemptRecord] = field(default_factory=list)
    total_seconds: float = 0.0

    @property
    def fell_back(self) -> bool:
        return self.served_platform != self.placement.platform


class PlatformRefused(Unavailable):
    """The instance refused the request before running it: the request may go elsewhere."""


class PlatformExhausted(ResourceExhausted, PlatformRefused):
    """The instance refused the request for want of capacity: it may go elsewhere."""


class PlatformFailed(PlatformRefused):
    """The instance failed: unreachable, an internal error, the connection lost, or no answer
    within the attempt's time. The request may go elsewhere, and the instance is ejected from
    the placer's choices for a while (`InstanceRegistry.record_failure`)."""


class AttemptTimedOut(PlatformFailed):
    """No answer within the attempt's time: the instance's failure when the request still had
    time left (it may go elsewhere), the caller's deadline otherwise."""


class Forwarder(Protocol):
    async def forward(
        self, instance: Instance, payload: Any, timeout: float, request_id: str
    ) -> inference_pb2.PredictResponse:
        """Sends the request (its id: the placement's) to the instance and returns its answer;
        raises PlatformRefused when the request may be tried elsewhere, another ServiceError
        otherwise."""

    def forget(self, instance_id: str) -> None:
        """The instance has left: release what was kept for it (its channel)."""

    def check_adapter(self, address: str) -> None:
        """Raises FailedPrecondition unless an adapter serves at `address`."""

    def metadata(
        self, instance: Instance, name: str, version: str, timeout: float
    ) -> inference_pb2.ModelMetadata:
        """The instance's metadata of a model version (the adapter's ModelMetadata)."""


class Placer:
    def __init__(
        self,
        policy: Policy,
        forwarder: Forwarder,
        metrics: PlacerMetrics,
        clock: Callable[[], float] = time.monotonic,
        *,
        gathering_s: float = 0.0,
    ) -> None:
        """`clock` times the frequency window and heartbeats (the simulator's is virtual);
        for `gathering_s` after start a request for a model not in view yet waits for it."""
        self._policy = policy.validated()
        self._policy_lock = threading.Lock()
        self.frequency = FrequencyWindow(policy.frequency_window_s, clock)
        self.registry = InstanceRegistry(policy.heartbeat_timeout_s, clock, gathering_s=gathering_s)
        self._forwarder = forwarder
        self._metrics = metrics
        self._clock = clock
        self._mirrors: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        """Cancels the copies of requests still on their way; on the event loop."""
        for mirror in list(self._mirrors):
            mirror.cancel()
        await asyncio.gather(*self._mirrors, return_exceptions=True)

    # Policy ----------------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._policy

    def update_policy(self, **changes: Any) -> Policy:
        with self._policy_lock:
            policy = self._policy.with_changes(**changes)
            self.frequency.resize(policy.frequency_window_s)
            self.registry.heartbeat_timeout = policy.heartbeat_timeout_s
            self._policy = policy
        log.info("policy updated", extra={"policy": vars(policy)})
        return policy

    # Placement -------------------------------------------------------------------------------

    def place(self, request: Request) -> Placement:
        """Decides only; the request counts towards f_t, no capacity is reserved."""
        placement, _instance, _ticket = self._decide(request, reserve=False)
        return placement

    def place_batch(self, requests: Iterable[Request]) -> list[Placement]:
        """Algorithm 1 over a set of requests R, in order: K = {(r_id, platform)}. A batch
        with an invalid request is refused whole (the requests before it are counted in f_t)."""
        requests = list(requests)
        if len(requests) > MAX_BATCH:
            raise InvalidArgument(
                f"a batch holds at most {MAX_BATCH} requests, not {len(requests)}; split it"
            )
        return [self.place(request) for request in requests]

    def _decide(
        self, request: Request, *, reserve: bool, wait: bool = True
    ) -> tuple[Placement, Instance | None, Ticket | None]:
        _check_request(request)
        policy = self._policy
        rule = rules.rule_for(policy.placement_rule, policy.pinned_platform)
        started = time.perf_counter()
        with tracer.start_as_current_span("placer.place") as span:

            def choose(platforms: dict[Platform, PlatformState]) -> _Choice:
                inputs = self._inputs(request, policy, rule, platforms)
                return _Choice(rule.decide(inputs), inputs)

            choice, instance, ticket = self.registry.decide(
                request.model_name,
                request.model_version,
                choose,
                policy.preference_order,
                reserve=reserve,
                wait=wait,
            )
            placement = Placement(
                request_id=request.request_id or _new_request_id(),
                platform=choice.decision.platform,
                branch=choice.decision.branch,
                reason=choice.decision.reason,
                inputs=choice.inputs,
                instance_id=instance.instance_id if instance else "",
                instance_address=instance.address if instance else "",
                decision_seconds=time.perf_counter() - started,
                mirror=choice.decision.mirror,
            )
            if span.is_recording():
                span.set_attributes(_placement_attributes(request, placement))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("placed", extra=_placement_attributes(request, placement))
        self._metrics.observe_placement(placement.platform, placement.branch, started)
        return placement, instance, ticket

    def _inputs(
        self,
        request: Request,
        policy: Policy,
        rule: PlacementRule,
        platforms: dict[Platform, PlatformState],
    ) -> Inputs:
        f_t = self.frequency.record(request.model_name)
        objective = deadline = None
        if Need.PREDICTIONS in rule.needs:
            objective = request.latency_objective_s or policy.latency_objective_s(
                request.model_name
            )
            judged_by = Objective(objective, f_t, self._clock(), policy.slo_attainment_target)
            prediction.predict_all(
                platforms, request.data_size_bytes, policy.platform_settings, judged_by
            )
            deadline = request.deadline_s
        return Inputs(
            f_t,
            request.data_size_bytes,
            policy.frequency_threshold_rps,
            policy.data_size_threshold_bytes,
            platforms,
            objective,
            deadline,
            policy.shed_late_requests,
        )

    # Forwarding ------------------------------------------------------------------------------

    async def infer(self, request: Request, payload: object, timeout: float) -> InferResult:
        """Places the request, forwards it, and falls back along the paper's order when the
        chosen instance refuses it before answering."""
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        placement, instance, ticket = await self._admitted(request)
        self._send_mirrors(placement, request, payload, deadline)
        return await self._serve(placement, request, instance, ticket, payload, deadline, started)

    async def infer_together(
        self, batch: Request, parts: Sequence[tuple[Request, object]], timeout: float
    ) -> list[InferResult]:
        """A batch that stays together: placed once, as the one request `batch` (all its bytes,
        one in f_t), then each part sent, all at once, to the platform so chosen (a slot or a
        place in its queue each), falling back part by part where that platform refuses one."""
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        placement, _instance, ticket = await self._admitted(batch)
        tickets = [ticket, *(self._same_platform(placement, batch) for _ in parts[1:])]

        def serve(index: int) -> Coroutine[Any, Any, InferResult]:
            request, payload = parts[index]
            ticket = tickets[index]
            part_id = request.request_id or f"{placement.request_id}-{index}"
            part = replace(placement, request_id=part_id)
            found = ticket.instance if ticket is not None else None
            return self._serve(part, request, found, ticket, payload, deadline, started)

        return list(await asyncio.gather(*map(serve, range(len(parts)))))

    async def _admitted(self, request: Request) -> tuple[Placement, Instance | None, Ticket | None]:
        """Placed, with a slot reserved; while the view is gathering, a request for a model
        not in it yet waits for it (here, on the loop, not on a thread)."""
        while True:
            try:
                placement, instance, ticket = self._decide(request, reserve=True, wait=False)
                break
            except NotFound:
                if not self.registry.gathering:
                    raise
                await asyncio.sleep(GATHERING_POLL_S)
        if placement.platform is None:
            raise ResourceExhausted(f"model {request.model_name!r}: {placement.reason}")
        return placement, instance, ticket

    def _same_platform(self, placement: Placement, request: Request) -> Ticket | None:
        assert placement.platform is not None
        return self.registry.reserve_with_capacity(
            placement.platform, request.model_name, request.model_version, or_queue=True
        )

    async def _serve(
        self,
        placement: Placement,
        request: Request,
        instance: Instance | None,
        ticket: Ticket | None,
        payload: object,
        deadline: float,
        started: float,
    ) -> InferResult:
        """Sends a placed request to its instance, then along the fallback order."""
        assert placement.platform is not None
        attempts: list[AttemptRecord] = []
        candidates = itertools.chain(
            [(placement.platform, instance, ticket)], self.fallbacks(placement, request)
        )
        # Another platform serves the model, and the policy lets the request go there.
        may_fall_back = len(placement.inputs.platforms) > 1 and _falls_back(self._policy)
        for platform, instance, ticket in candidates:
            if instance is None or ticket is None:
                attempts.append(AttemptRecord(platform, "", _no_instance(platform), 0.0))
                continue
            answer = await self._attempt(
                instance, ticket, payload, deadline, attempts, placement.request_id, may_fall_back
            )
            if answer is not None:
                self.observe_answer(placement, instance, attempts[-1].seconds)
                result = InferResult(
                    placement,
                    answer,
                    platform,
                    instance.instance_id,
                    attempts,
                    time.perf_counter() - started,
                )
                trace.get_current_span().set_attributes(
                    {
                        "straightline.served_platform": platform_label(platform),
                        "straightline.served_instance_id": instance.instance_id,
                        "straightline.fell_back": result.fell_back,
                        "straightline.attempts": len(attempts),
                    }
                )
                return result
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(_too_late(attempts))
        raise Unavailable(_nothing_took(request, attempts))

    def admit(self, request: Request) -> tuple[Placement, Instance | None, Ticket | None]:
        """Places the request and reserves a slot on the chosen instance: (placement,
        instance or None, ticket or None). Hand the ticket to `registry.finish` when done."""
        return self._decide(request, reserve=True)

    def fallbacks(
        self, placement: Placement, request: Request
    ) -> Iterator[tuple[Platform, Instance, Ticket]]:
        """After the chosen platform refused the request: (platform, instance, ticket) for each
        other platform in the fallback order that takes its size and has a free slot or room in
        its queue, the slot or place reserved as it is reached."""
        policy = self._policy
        for platform in self._fallback_order(placement, policy)[1:]:
            if request.data_size_bytes > policy.platform_settings[platform].max_request_bytes:
                continue
            ticket = self.registry.reserve_with_capacity(
                platform, request.model_name, request.model_version, or_queue=True
            )
            if ticket is not None and placement.platform is not None:
                self._metrics.count_fallback(placement.platform, platform)
                yield platform, ticket.instance, ticket

    def copies(self, placement: Placement, request: Request) -> Iterator[Ticket]:
        """A slot reserved for a copy of the request on each platform the rule wants
        measured that has one free. Hand each ticket to `registry.finish` when done."""
        for platform in placement.mirror:
            ticket = self.registry.reserve_with_capacity(
                platform, request.model_name, request.model_version
            )
            if ticket is not None:
                self._metrics.count_mirror(platform)
                yield ticket

    def observe_copy(self, placement: Placement, instance: Instance, observed: float) -> None:
        """A copy's answer from `instance` after `observed` seconds: only the instance's
        calibration keeps it."""
        state = placement.inputs.platforms.get(instance.platform)
        if state is not None:
            _calibrate(state, instance, observed)

    def _send_mirrors(
        self, placement: Placement, request: Request, payload: Any, deadline: float
    ) -> None:
        """A copy of the request to each platform the rule wants measured, on a slot of its
        own; the answer is dropped, and only the adapter's figures and the instance's
        calibration keep it."""
        for ticket in self.copies(placement, request):
            timeout = max(MIN_ATTEMPT_S, deadline - time.monotonic())
            request_id = f"{placement.request_id}.mirror"
            mirror = asyncio.create_task(
                self._mirror(placement, ticket, payload, timeout, request_id)
            )
            self._mirrors.add(mirror)
            mirror.add_done_callback(self._mirrors.discard)

    async def _mirror(
        self, placement: Placement, ticket: Ticket, payload: Any, timeout: float, request_id: str
    ) -> None:
        started = time.perf_counter()
        try:
            await self._forwarder.forward(ticket.instance, payload, timeout, request_id)
        except PlatformRefused as refusal:
            self._record_refusal(ticket.instance, ticket, refusal)
            return
        except ServiceError:
            pass
        else:
            self.observe_copy(placement, ticket.instance, time.perf_counter() - started)
        self.registry.finish(ticket, ran=True)

    def observe_answer(self, placement: Placement, instance: Instance, observed: float) -> None:
        """An answer from `instance` after `observed` seconds: the error of the prediction the
        request was placed by, for the metrics and the instance's calibration."""
        state = placement.inputs.platforms.get(instance.platform)
        if state is not None and state.predicted_latency_s is not None:
            error = observed - state.predicted_latency_s
            self._metrics.observe_prediction_error(instance.platform, error)
            _calibrate(state, instance, observed)
            trace.get_current_span().set_attribute(
                "straightline.observed_latency_s", round(observed, 6)
            )

    def _fallback_order(self, placement: Placement, policy: Policy) -> list[Platform]:
        """The chosen platform, then the others in the policy's order of preference after it."""
        if placement.platform is None:
            return []
        if not _falls_back(policy):
            return [placement.platform]
        order = policy.preference_order
        start = order.index(placement.platform)
        return [*order[start:], *order[:start]]

    async def _attempt(
        self,
        instance: Instance,
        ticket: Ticket,
        payload: Any,
        deadline: float,
        attempts: list[AttemptRecord],
        request_id: str,
        may_fall_back: bool,
    ) -> inference_pb2.PredictResponse | None:
        """One try on one instance: the answer, or None when it refused the request."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.registry.finish(ticket, ran=False)
            raise DeadlineExceeded(_too_late(attempts))
        budget = max(MIN_ATTEMPT_S, remaining * ATTEMPT_SHARE) if may_fall_back else remaining
        started = time.perf_counter()
        with tracer.start_as_current_span(
            "placer.forward",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "straightline.platform": platform_label(instance.platform),
                "straightline.instance_id": instance.instance_id,
                "straightline.attempt": len(attempts) + 1,
                "server.address": instance.address,
            },
        ) as span:
            try:
                answer = await self._forwarder.forward(
                    instance, payload, min(budget, remaining), request_id
                )
            except PlatformRefused as refusal:
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(refusal)))
                if isinstance(refusal, AttemptTimedOut) and budget >= remaining:
                    self.registry.finish(ticket, ran=True)  # the caller's deadline: no fault
                    raise DeadlineExceeded(
                        f"{platform_label(instance.platform)} instance {instance.instance_id} "
                        f"did not answer before the request's deadline ({remaining:.2f} s left)"
                    ) from None
                self._record_refusal(instance, ticket, refusal)
                attempts.append(
                    AttemptRecord(
                        instance.platform,
                        instance.instance_id,
                        refusal,
                        time.perf_counter() - started,
                    )
                )
                return None
            except BaseException:
                self.registry.finish(ticket, ran=True)
                raise
        self.registry.finish(ticket, ran=True)
        self.registry.record_success(instance)
        attempts.append(
            AttemptRecord(
                instance.platform, instance.instance_id, None, time.perf_counter() - started
            )
        )
        return answer

    def _record_refusal(self, instance: Instance, ticket: Ticket, refusal: PlatformRefused) -> None:
        """A failed instance may have run the request (its slot counts as freed) and is ejected
        for a while; one that refused it never ran it (no slot was freed)."""
        failed = isinstance(refusal, PlatformFailed)
        self.registry.finish(ticket, ran=failed)
        if failed:
            ejected_s = self.registry.record_failure(instance)
            log.warning(
                "instance failed a request: out of the placer's choices for a while",
                extra={
                    "instance_id": instance.instance_id,
                    "platform": platform_label(instance.platform),
                    "ejected_s": ejected_s,
                    "cause": str(refusal),
                },
            )

    # Heartbeats ------------------------------------------------------------------------------

    def model_metadata(
        self, name: str, version: str, timeout: float
    ) -> inference_pb2.ModelMetadata:
        """A served model's metadata (class names, input size), from a live instance that
        serves it; NotFound when none does."""
        for instance in self.registry.live():
            if instance.serves(name, version):
                return self._forwarder.metadata(instance, name, version, timeout)
        raise NotFound(unserved(name, version))

    def check_advertised(self, address: str) -> None:
        """Raises FailedPrecondition unless an adapter answers at `address`: nothing is placed
        on an address the placer has not seen serve the adapter's service."""
        self._forwarder.check_adapter(address)

    def expire_instances(self) -> None:
        """Drops instances whose heartbeats stopped; their outstanding requests are logged (the
        calls themselves fail and fall back)."""
        for departure in self.registry.expire():
            self._forwarder.forget(departure.instance_id)
            log.warning(
                "instance left the live view: no heartbeat within the timeout",
                extra={
                    "instance_id": departure.instance_id,
                    "platform": platform_label(departure.platform),
                    "outstanding_requests": departure.outstanding,
                },
            )
        self._metrics.set_live_instances(self.registry.live())


@dataclass(frozen=True, slots=True)
class _Choice:
    decision: Decision
    inputs: Inputs

    @property
    def platform(self) -> Platform | None:
        return self.decision.platform


def _new_request_id() -> str:
    return f"{random.getrandbits(64):016x}"


def _check_request(request: Request) -> None:
    if not request.model_name:
        raise InvalidArgument("model.name is empty; name the model the request is for")
    check_model(request.model_name, request.model_version)
    if request.data_size_bytes <= 0:
        raise InvalidArgument("the request is empty: data size must be at least one byte")
    if request.data_size_bytes > MAX_REQUEST_BYTES:
        raise InvalidArgument(
            f"data size {request.data_size_bytes} bytes is over the largest request the placer "
            f"takes ({MAX_REQUEST_BYTES} bytes)"
        )


def _calibrate(state: PlatformState, instance: Instance, observed: float) -> None:
    """Keeps the error of the prediction a request (or its copy) was sent by, at the load
    level it was made at, for the instance's margin (`calibration.py`): only a real
    prediction (not one of an unmeasured instance) of the instance that answered."""
    if state.predicted_latency_s is None or state.unmeasured or state.instance is not instance:
        return
    instance.prediction_errors.add(observed - state.predicted_latency_s, state.load_level)


def _falls_back(policy: Policy) -> bool:
    """Whether a refused request may be tried on other platforms under this policy."""
    rule = rules.rule_for(policy.placement_rule, policy.pinned_platform)
    return rule.falls_back and policy.fallback_enabled


def _too_late(attempts: list[AttemptRecord]) -> str:
    if not attempts:
        return "the deadline passed before the request could be sent"
    tried = "; ".join(str(a.error) for a in attempts if a.error is not None)
    return f"the deadline passed after {len(attempts)} attempt(s): {tried}"


def _no_instance(platform: Platform) -> PlatformRefused:
    return PlatformRefused(f"no live {platform_label(platform)} instance serves the model")


def _nothing_took(request: Request, attempts: list[AttemptRecord]) -> str:
    tried = "; ".join(
        f"{platform_label(a.platform)} {a.instance_id or '(none)'}: {a.error}" for a in attempts
    )
    return (
        f"no platform could take request {request.request_id or '(unnamed)'} for model "
        f"{request.model_name!r}: {tried or 'no platform has capacity'}; retry later"
    )


_PLATFORM_KEYS = {
    platform: tuple(
        f"straightline.{platform_label(platform)}_{key}"
        for key in ("free_slots", "predicted_latency_s", "predicted_cost_usd")
    )
    for platform in Platform
}


def _placement_attributes(request: Request, placement: Placement) -> dict[str, Any]:
    inputs = placement.inputs
    attributes = {
        "straightline.request_id": placement.request_id,
        "straightline.model": request.model_name,
        "straightline.model_version": request.model_version,
        "straightline.f_t": inputs.f_t,
        "straightline.r_d": inputs.r_d,
        "straightline.frequency_threshold": inputs.frequency_threshold,  # F
        "straightline.size_threshold": inputs.size_threshold,  # D
        "straightline.platform": platform_label(placement.platform),
        "straightline.branch": placement.branch.name.lower(),
        "straightline.instance_id": placement.instance_id,
    }
    for platform, state in inputs.platforms.items():
        free_slots, predicted_latency, predicted_cost = _PLATFORM_KEYS[platform]
        attributes[free_slots] = state.free_slots
        if state.predicted_latency_s is not None:
            attributes[predicted_latency] = state.predicted_latency_s
            attributes[predicted_cost] = state.predicted_cost_usd
    if inputs.latency_objective_s is not None:
        attributes["straightline.latency_objective_s"] = inputs.latency_objective_s
    if inputs.deadline_s is not None:
        attributes["straightline.deadline_s"] = inputs.deadline_s
    return attributes

"""The gRPC face of the placer: translates v1 messages to the core's values and back."""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, cast

import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from grpc import ServicerContext

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import READERS, Identity, Role, access_of, current_identity
from straightline_common.errors import Cancelled, InvalidArgument, PermissionDenied, ServiceError
from straightline_common.grpcserver import status_of
from straightline_common.names import check_id, check_model, shown
from straightline_common.timeconv import duration, seconds
from straightline_placer import policy_file, rules
from straightline_placer.algorithm import Branch, Platform, Rule, platform_label
from straightline_placer.core import Placement, Placer, Request
from straightline_placer.policy import MAX_PAYLOAD_BYTES, PlatformSettings, Policy, rule_name
from straightline_placer.registry import Instance, InstanceStats, PlatformState, summarize

log = logging.getLogger(__name__)

SERVICE_NAME = placer_pb2.DESCRIPTOR.services_by_name["PlacerService"].full_name
ACCESS = access_of(
    SERVICE_NAME,
    {
        "Infer": READERS,
        "Place": READERS,
        "PlaceBatch": READERS,
        "WatchResources": READERS,
        "GetPolicy": READERS,
        "Heartbeat": frozenset({Role.ADAPTER}),
        "UpdatePolicy": frozenset({Role.OPERATOR}),
    },
)
_MIN_WATCH_INTERVAL_S = 0.05
MAX_WATCH_INTERVAL_S = 60.0
_DEFAULT_WATCH_INTERVAL_S = 1.0
# How often a watch looks whether the view changed.
_WATCH_POLL_S = 0.05


class PlacerServicer(placer_pb2_grpc.PlacerServiceServicer):
    def __init__(
        self,
        placer: Placer,
        default_timeout_s: float,
        stopping: threading.Event,
        policy_file_path: str = "",
    ) -> None:
        self._placer = placer
        self._default_timeout_s = default_timeout_s
        self._stopping = stopping
        self._policy_file = policy_file.PolicyFile(policy_file_path) if policy_file_path else None
        self._policy_saving = threading.Lock()

    def Place(
        self, request: placer_pb2.PlaceRequest, context: ServicerContext
    ) -> placer_pb2.PlaceResponse:
        return placer_pb2.PlaceResponse(
            placement=_placement_message(
                self._placer.place(
                    _request_of(request, request.data_size_bytes, _deadline(request))
                )
            )
        )

    def PlaceBatch(
        self, request: placer_pb2.PlaceBatchRequest, context: ServicerContext
    ) -> placer_pb2.PlaceBatchResponse:
        placements = self._placer.place_batch(
            _request_of(r, r.data_size_bytes, _deadline(r)) for r in request.requests
        )
        return placer_pb2.PlaceBatchResponse(placements=map(_placement_message, placements))

    async def Infer(
        self, request: placer_pb2.InferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> placer_pb2.InferResponse:
        if len(request.payload) > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(
                f"the payload is {len(request.payload)} bytes, over the limit of "
                f"{MAX_PAYLOAD_BYTES} bytes (16 MiB); send a smaller image"
            )
        timeout = context.time_remaining()
        if timeout is None or timeout > self._default_timeout_s:
            timeout = self._default_timeout_s
        result = await self._placer.infer(
            _request_of(request, len(request.payload), context.time_remaining()), request, timeout
        )
        answer = result.answer
        return placer_pb2.InferResponse(
            request_id=result.placement.request_id,
            model=answer.model,
            classes=answer.classes,
            placement=_placement_message(result.placement),
            served_platform=_wire(result.served_platform),
            served_instance_id=result.served_instance_id,
            fell_back=result.fell_back,
            attempts=[
                placer_pb2.Attempt(
                    platform=_wire(attempt.platform),
                    instance_id=attempt.instance_id,
                    status_code=_status_code(attempt.error),
                    status_message=str(attempt.error or ""),
                    duration=duration(attempt.seconds),
                )
                for attempt in result.attempts
            ],
            platform_timings=answer.timings,
            total=duration(result.total_seconds),
        )

    async def Heartbeat(
        self,
        request_iterator: AsyncIterator[placer_pb2.HeartbeatRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[placer_pb2.HeartbeatResponse]:
        owner = object()
        identity = current_identity()
        if identity is None:  # the interceptor authenticates every call first
            raise PermissionDenied("heartbeats need an adapter's identity")
        instance_id = checked_address = None
        try:
            async for message in _until_quiet(request_iterator, self._placer):
                report = message.report
                _check_report(report, instance_id)
                _check_platform_allowed(identity, report.platform)
                if not message.leaving and report.address != checked_address:
                    # Before the instance is placeable, and again when its address changes.
                    self._placer.registry.check_may_report(report.instance_id, owner, str(identity))
                    await asyncio.to_thread(self._placer.check_advertised, report.address)
                    checked_address = report.address
                instance_id = report.instance_id
                if message.leaving:
                    self._placer.registry.leave(instance_id, owner)
                    log.info(
                        "instance left the live view: it said so",
                        extra={"instance_id": instance_id},
                    )
                else:
                    self._record(report, owner, identity)
                policy = self._placer.policy
                yield placer_pb2.HeartbeatResponse(
                    sequence=report.sequence,
                    interval=duration(policy.heartbeat_interval_s),
                    timeout=duration(policy.heartbeat_timeout_s),
                    batching=batching_limits(policy.platform_settings[Platform(report.platform)]),
                )
        finally:
            if instance_id is not None:
                self._placer.registry.stream_closed(instance_id, owner)

    def _record(self, report: types_pb2.InstanceReport, owner: object, identity: Identity) -> None:
        self._placer.registry.report(
            instance_id=report.instance_id,
            platform=Platform(report.platform),
            address=report.address,
            capacity_total=report.capacity_total,
            capacity_free=report.capacity_free,
            models=[(m.name, m.version) for m in report.models],
            report=report,
            owner=owner,
            stats=stats_of(report),
            identity=str(identity),
        )

    async def WatchResources(
        self,
        request: placer_pb2.WatchResourcesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[placer_pb2.WatchResourcesResponse]:
        """A view now, then each change at most every `min_interval`. A caller that cancels
        or whose deadline passes cancels the task, and with it the watch."""
        interval = _watch_interval(request)
        registry = self._placer.registry
        seen = -1
        while not self._stopping.is_set():
            if registry.version != seen:
                seen = registry.version
                yield _resource_view(registry.live(), self._placer.policy.preference_order)
                await asyncio.sleep(interval)
            else:
                await asyncio.sleep(_WATCH_POLL_S)

    def GetPolicy(
        self, request: placer_pb2.GetPolicyRequest, context: ServicerContext
    ) -> placer_pb2.GetPolicyResponse:
        return placer_pb2.GetPolicyResponse(policy=_policy_message(self._placer.policy))

    def UpdatePolicy(
        self, request: placer_pb2.UpdatePolicyRequest, context: ServicerContext
    ) -> placer_pb2.UpdatePolicyResponse:
        changes = _policy_changes(request.policy, request.update_mask.paths)
        if self._policy_file is None:
            updated = self._placer.update_policy(**changes)
        else:
            with self._policy_saving, self._policy_file.locked():
                self._apply_saved_policy()  # another placer's change first: none is lost
                updated = self._placer.update_policy(**changes)
                self._policy_file.save(_policy_message(updated))
        log.info("policy updated", extra={"fields": sorted(changes)})
        return placer_pb2.UpdatePolicyResponse(policy=_policy_message(updated))

    def restore_policy(self) -> None:
        """Starts from the policy file's policy, if one was saved; raises PolicyFileError when
        the file cannot be read as one."""
        if self._policy_file is not None:
            with self._policy_file.locked():
                self._apply_saved_policy()

    def follow_policy_file(self) -> None:
        """Applies the policy another placer saved since this one last read or wrote it; a
        file that cannot be read is logged (once) and the current policy kept."""
        if self._policy_file is None:
            return
        with self._policy_saving:
            try:
                self._apply_saved_policy()
            except policy_file.PolicyFileError as error:
                log.error("policy file not applied: %s", error)

    def _apply_saved_policy(self) -> None:
        saved_in = self._policy_file
        saved = None if saved_in is None else saved_in.changed()
        if saved_in is None or saved is None:
            return
        try:
            self._placer.update_policy(**_policy_changes(saved, []))
        except InvalidArgument as error:
            raise policy_file.PolicyFileError(
                f"the policy file {saved_in.path} holds an invalid policy: {error}"
            ) from None
        log.info("policy read from its file", extra={"policy_file": saved_in.path})


def _request_of(message: Any, data_size: int, deadline_s: float | None) -> Request:
    objective = None
    if message.HasField("latency_objective"):
        objective = seconds(message.latency_objective)
    if objective is not None and not 0 < objective <= 3600:
        raise InvalidArgument("latency_objective must be above 0 s and at most 1 h")
    return Request(
        message.request_id,
        message.model.name,
        message.model.version,
        data_size,
        objective,
        deadline_s,
    )


def _watch_interval(request: placer_pb2.WatchResourcesRequest) -> float:
    if not request.HasField("min_interval"):
        return _DEFAULT_WATCH_INTERVAL_S
    interval = seconds(request.min_interval)
    if interval > MAX_WATCH_INTERVAL_S:
        raise InvalidArgument(f"min_interval must be at most {MAX_WATCH_INTERVAL_S:.0f} s")
    return max(_MIN_WATCH_INTERVAL_S, interval)


def _deadline(message: placer_pb2.PlaceRequest) -> float | None:
    if not message.HasField("deadline"):
        return None
    deadline = seconds(message.deadline)
    if deadline < 0:
        raise InvalidArgument("deadline must not be negative")
    return deadline


def stats_of(report: types_pb2.InstanceReport) -> InstanceStats:
    buckets = report.service_times
    return InstanceStats(
        in_flight=report.in_flight,
        queue_depth=report.queue_depth,
        queue_limit=report.queue_limit,
        warm_environments=report.warm_environments,
        warm_slots=report.warm_slots,
        runs_per_environment=report.runs_per_environment,
        recent_latency_p50_s=seconds(report.recent_latency_p50),
        recent_latency_p95_s=seconds(report.recent_latency_p95),
        recent_cold_start_s=seconds(report.recent_cold_start),
        service_time_bounds=tuple(b.max_bytes or _UNBOUNDED for b in buckets),
        service_time_medians_s=tuple(seconds(b.median) for b in buckets),
        service_time_slowest_s=tuple(seconds(_slowest(b)) for b in buckets),
        service_time_counts=tuple(b.count for b in buckets),
    )


def _wire(value: int) -> Any:
    """One of the core's IntEnums (Platform, Branch, Rule) as its proto enum: the same numbers."""
    return value


def _slowest(bucket: types_pb2.ServiceTimeBySize) -> duration_pb2.Duration:
    """The bucket's slowest request; from adapters that predate it, its p95 or median."""
    for field in ("slowest", "p95"):
        if bucket.HasField(field):
            return cast(duration_pb2.Duration, getattr(bucket, field))
    return bucket.median


def _check_report(report: types_pb2.InstanceReport, stream_instance_id: str | None) -> None:
    if not report.instance_id:
        raise InvalidArgument("heartbeat without instance_id; every report must name its instance")
    check_id(report.instance_id, "heartbeat: instance_id")
    where = f"heartbeat from {report.instance_id!r}"
    if stream_instance_id is not None and report.instance_id != stream_instance_id:
        raise InvalidArgument(
            f"{where}: this stream reports for {stream_instance_id!r}; open one stream per instance"
        )
    if report.platform not in Platform._value2member_map_:
        raise InvalidArgument(f"{where}: platform must be one of {_PLATFORM_NAMES}")
    if not report.address or ":" not in report.address:
        raise InvalidArgument(f"{where}: address must be host:port, not {shown(report.address)}")
    if report.capacity_total > MAX_CAPACITY:
        raise InvalidArgument(f"{where}: capacity_total must be at most {MAX_CAPACITY}")
    if len(report.service_times) > MAX_SERVICE_TIME_BUCKETS:
        raise InvalidArgument(f"{where}: at most {MAX_SERVICE_TIME_BUCKETS} service_times buckets")
    bounds = [b.max_bytes or _UNBOUNDED for b in report.service_times]
    if bounds != sorted(set(bounds)):
        raise InvalidArgument(
            f"{where}: service_times must be in increasing max_bytes, the unbounded one last"
        )
    if report.capacity_free > report.capacity_total:
        raise InvalidArgument(
            f"{where}: capacity_free ({report.capacity_free}) is more than capacity_total "
            f"({report.capacity_total})"
        )
    for model in report.models:
        check_model(model.name, model.version)


def _check_platform_allowed(identity: Identity, platform: int) -> None:
    """A certified adapter reports only the platform its certificate names: adapter/flask (or
    adapter/flask-<anything>) Flask instances. A token stands for the whole adapter role."""
    if not identity.certified:
        return
    label = platform_label(Platform(platform))
    if identity.name != label and not identity.name.startswith(label + "-"):
        raise PermissionDenied(
            f"this adapter's certificate names it {identity}, so it may report "
            f"{identity.name.partition('-')[0]} instances only, not {label} ones; give each "
            f"platform's adapter a certificate named adapter/<platform>"
        )


_PLATFORM_NAMES = ", ".join(platform.name for platform in Platform)
# Limits on what a report may claim, so that sums over instances stay within uint32.
MAX_CAPACITY = 100_000
MAX_SERVICE_TIME_BUCKETS = 32
_UNBOUNDED = 2**64

_POLICY_FIELDS: dict[str, tuple[str, Callable[[placer_pb2.Policy], Any]]] = {
    "frequency_threshold_rps": ("frequency_threshold_rps", lambda p: p.frequency_threshold_rps),
    "data_size_threshold_bytes": (
        "data_size_threshold_bytes",
        lambda p: p.data_size_threshold_bytes,
    ),
    "frequency_window": (
        "frequency_window_s",
        lambda p: seconds(p.frequency_window),
    ),
    "heartbeat_timeout": (
        "heartbeat_timeout_s",
        lambda p: seconds(p.heartbeat_timeout),
    ),
    "pinned_platform": (
        "pinned_platform",
        lambda p: Platform(p.pinned_platform) if p.pinned_platform else None,
    ),
    "fallback_enabled": ("fallback_enabled", lambda p: p.fallback_enabled),
    "keep_batches_together": ("keep_batches_together", lambda p: p.keep_batches_together),
    "slo_attainment_target": ("slo_attainment_target", lambda p: p.slo_attainment_target),
    "shed_late_requests": ("shed_late_requests", lambda p: p.shed_late_requests),
    "placement_rule": ("placement_rule", lambda p: p.placement_rule or Rule.PAPER),
    "latency_objectives": (
        "latency_objectives",
        lambda p: {model: seconds(objective) for model, objective in p.latency_objectives.items()},
    ),
    "default_latency_objective": (
        "default_latency_objective_s",
        lambda p: seconds(p.default_latency_objective),
    ),
    "platform_settings": ("platform_settings", lambda p: _platform_settings(p.platform_settings)),
}


def _policy_changes(message: placer_pb2.Policy, paths: Iterable[str]) -> dict[str, Any]:
    paths = list(paths) or list(_POLICY_FIELDS)
    unknown = [path for path in paths if path not in _POLICY_FIELDS]
    if unknown:
        raise InvalidArgument(
            f"update_mask names unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(_POLICY_FIELDS)}"
        )
    if message.pinned_platform not in (0, *Platform._value2member_map_):
        raise InvalidArgument(f"pinned_platform must be UNSPECIFIED or one of {_PLATFORM_NAMES}")
    if message.placement_rule not in (0, *rules.RULES):
        raise InvalidArgument(
            f"placement_rule must be UNSPECIFIED or one of the placer's rules: "
            f"{', '.join(rule_name(kind) for kind in rules.RULES)}"
        )
    return {_POLICY_FIELDS[path][0]: _POLICY_FIELDS[path][1](message) for path in paths}


def _policy_message(policy: Policy) -> placer_pb2.Policy:
    return placer_pb2.Policy(
        frequency_threshold_rps=policy.frequency_threshold_rps,
        data_size_threshold_bytes=policy.data_size_threshold_bytes,
        frequency_window=duration(policy.frequency_window_s),
        heartbeat_timeout=duration(policy.heartbeat_timeout_s),
        pinned_platform=_wire(policy.pinned_platform or 0),
        fallback_enabled=policy.fallback_enabled,
        keep_batches_together=policy.keep_batches_together,
        slo_attainment_target=policy.slo_attainment_target,
        shed_late_requests=policy.shed_late_requests,
        placement_rule=_wire(policy.placement_rule),
        latency_objectives={
            model: duration(objective) for model, objective in policy.latency_objectives.items()
        },
        default_latency_objective=duration(policy.default_latency_objective_s),
        platform_settings=[
            placer_pb2.PlatformSettings(
                platform=_wire(platform),
                price_per_instance_hour=settings.price_per_instance_hour,
                price_per_gb_second=settings.price_per_gb_second,
                price_per_request=settings.price_per_request,
                memory_mb=settings.memory_mb,
                network_round_trip=duration(settings.network_round_trip_s),
                bandwidth_bytes_per_second=settings.bandwidth_bytes_per_s,
                max_request_bytes=settings.max_request_bytes,
                host=settings.host,
                host_cores=settings.host_cores,
                batching=batching_limits(settings),
            )
            for platform, settings in policy.platform_settings.items()
        ],
    )


def _platform_settings(
    messages: Iterable[placer_pb2.PlatformSettings],
) -> dict[Platform, PlatformSettings]:
    settings = {}
    for message in messages:
        if message.platform not in Platform._value2member_map_:
            raise InvalidArgument("platform_settings: each entry must name a platform")
        if message.platform in settings:
            raise InvalidArgument("platform_settings: a platform is listed twice")
        settings[Platform(message.platform)] = PlatformSettings(
            price_per_instance_hour=message.price_per_instance_hour,
            price_per_gb_second=message.price_per_gb_second,
            price_per_request=message.price_per_request,
            memory_mb=message.memory_mb,
            network_round_trip_s=seconds(message.network_round_trip),
            bandwidth_bytes_per_s=message.bandwidth_bytes_per_second,
            max_request_bytes=message.max_request_bytes,
            host=message.host,
            host_cores=message.host_cores,
            max_batch_size=message.batching.max_batch_size,
            max_queue_delay_s=(
                seconds(message.batching.max_queue_delay)
                if message.batching.HasField("max_queue_delay")
                else None
            ),
        )
    return settings


def batching_limits(settings: PlatformSettings) -> types_pb2.BatchingLimits:
    limits = types_pb2.BatchingLimits(max_batch_size=settings.max_batch_size)
    if settings.max_queue_delay_s is not None:
        limits.max_queue_delay.CopyFrom(duration(settings.max_queue_delay_s))
    return limits


async def _until_quiet(
    messages: AsyncIterator[placer_pb2.HeartbeatRequest], placer: Placer
) -> AsyncIterator[placer_pb2.HeartbeatRequest]:
    """The stream's messages, ended with CANCELLED once it sends none for longer than the
    heartbeat timeout: a stream held open without heartbeats keeps neither a stream slot nor
    its instance's claim (issue 15: held streams must not lock anyone out)."""
    iterator = aiter(messages)
    while True:
        timeout = placer.policy.heartbeat_timeout_s
        try:
            message = await asyncio.wait_for(anext(iterator), timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            log.warning(
                "closed a heartbeat stream that sent nothing for longer than the heartbeat timeout",
                extra={"timeout_s": timeout},
            )
            raise Cancelled(
                f"no heartbeat for {timeout:g} s (the heartbeat timeout): the stream is closed; "
                "open a new one and report every timeout / 3"
            ) from None
        yield message


def _placement_message(placement: Placement) -> types_pb2.Placement:
    inputs = placement.inputs
    return types_pb2.Placement(
        request_id=placement.request_id,
        platform=_wire(placement.platform or 0),
        instance_id=placement.instance_id,
        instance_address=placement.instance_address,
        branch=_wire(placement.branch),
        inputs=types_pb2.PlacementInputs(
            request_frequency_rps=inputs.f_t,
            data_size_bytes=inputs.r_d,
            frequency_threshold_rps=inputs.frequency_threshold,
            data_size_threshold_bytes=inputs.size_threshold,
            platforms=[
                _platform_state_message(state, state.instance.stats.service_time_s(inputs.r_d))
                for state in inputs.platforms.values()
            ],
            latency_objective=_optional_duration(inputs.latency_objective_s),
            deadline=_optional_duration(inputs.deadline_s),
            **_deprecated_inputs(inputs.platforms, placement.branch),
        ),
        decision_time=duration(placement.decision_seconds),
    )


def _platform_state_message(state: PlatformState, service_time_s: float) -> types_pb2.PlatformState:
    return types_pb2.PlatformState(
        platform=_wire(state.platform),
        free_slots=state.free_slots,
        capacity_total=state.capacity_total,
        queue_depth=state.queue_depth,
        in_flight=state.in_flight,
        warm_environments=state.warm_environments,
        recent_service_time=duration(service_time_s),
        recent_latency_p95=duration(state.recent_latency_p95_s),
        predicted_latency=_optional_duration(state.predicted_latency_s),
        predicted_cost_usd=state.predicted_cost_usd,
        prediction_margin=None if state.predicted_latency_s is None else duration(state.margin_s),
    )


def _optional_duration(value: float | None) -> duration_pb2.Duration | None:
    return None if value is None else duration(value)


# The platforms the deprecated named fields (flask_free_slots, ...) were made for; a platform
# added since is in `platforms` only.
_NAMED_FIELD_PLATFORMS = (Platform.FLASK, Platform.DOCKER, Platform.SERVERLESS)


def _with_named_fields(
    platforms: dict[Platform, PlatformState],
) -> Iterator[tuple[Platform, PlatformState]]:
    return ((p, state) for p, state in platforms.items() if p in _NAMED_FIELD_PLATFORMS)


def _deprecated_inputs(platforms: dict[Platform, PlatformState], branch: Branch) -> dict[str, Any]:
    """PlacementInputs' per-platform fields of before `platforms`, filled for v1 clients: free
    slots and availability, and the latencies the latency-aware rule compared."""
    fields: dict[str, object] = {}
    for platform, state in _with_named_fields(platforms):
        name = platform_label(platform)
        fields[f"{name}_free_slots"] = state.free_slots
        if branch == Branch.FASTEST_FREE and state.free_slots > 0:
            fields[f"{name}_recent_latency_p95"] = duration(state.recent_latency_p95_s)
    for name in ("flask", "docker"):
        fields[f"{name}_available"] = bool(fields.get(f"{name}_free_slots"))
    return fields


def _resource_view(
    instances: list[Instance], order: Iterable[Platform]
) -> placer_pb2.WatchResourcesResponse:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    views = []
    for instance in instances:
        last_report = timestamp_pb2.Timestamp()
        last_report.FromNanoseconds(int(instance.last_report_time * 1e9))
        views.append(
            placer_pb2.InstanceView(
                report=cast(types_pb2.InstanceReport, instance.report),  # kept as received
                sent_since_report=max(0, instance.sent_since_report),
                effective_free=instance.effective_free,
                last_report_time=last_report,
            )
        )
    platforms = summarize(instances, order)
    return placer_pb2.WatchResourcesResponse(
        time=now,
        instances=views,
        platforms=[
            _platform_state_message(state, state.instance.stats.recent_latency_p50_s)
            for state in platforms.values()
        ],
        **{
            f"{platform_label(platform)}_free_slots": state.free_slots
            for platform, state in _with_named_fields(platforms)
        },
    )


def _status_code(error: ServiceError | None) -> int:
    return 0 if error is None else status_of(error).value[0]

"""The gRPC face of the placer: translates v1 messages to the core's values and back."""

import logging
import threading

from google.protobuf import timestamp_pb2

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.errors import InvalidArgument
from straightline_common.grpcserver import status_of
from straightline_common.timeconv import duration, seconds
from straightline_placer.algorithm import Platform, Rule
from straightline_placer.core import Placement, Placer, Request
from straightline_placer.policy import Policy

log = logging.getLogger(__name__)

_MIN_WATCH_INTERVAL_S = 0.05
_DEFAULT_WATCH_INTERVAL_S = 1.0


class PlacerServicer(placer_pb2_grpc.PlacerServiceServicer):
    def __init__(self, placer: Placer, default_timeout_s: float, stopping: threading.Event):
        self._placer = placer
        self._default_timeout_s = default_timeout_s
        self._stopping = stopping

    def Place(self, request, context):
        return placer_pb2.PlaceResponse(
            placement=_placement_message(
                self._placer.place(_request_of(request, request.data_size_bytes))
            )
        )

    def PlaceBatch(self, request, context):
        placements = self._placer.place_batch(
            _request_of(r, r.data_size_bytes) for r in request.requests
        )
        return placer_pb2.PlaceBatchResponse(placements=map(_placement_message, placements))

    def Infer(self, request, context):
        timeout = context.time_remaining()
        if timeout is None or timeout > self._default_timeout_s:
            timeout = self._default_timeout_s
        result = self._placer.infer(_request_of(request, len(request.payload)), request, timeout)
        answer = result.answer
        return placer_pb2.InferResponse(
            request_id=result.placement.request_id,
            model=answer.model,
            classes=answer.classes,
            placement=_placement_message(result.placement),
            served_platform=result.served_platform,
            served_instance_id=result.served_instance_id,
            fell_back=result.fell_back,
            attempts=[
                placer_pb2.Attempt(
                    platform=attempt.platform,
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

    def Heartbeat(self, request_iterator, context):
        owner = object()
        instance_id = None
        try:
            for message in request_iterator:
                report = message.report
                _check_report(report, instance_id)
                instance_id = report.instance_id
                if message.leaving:
                    self._placer.registry.leave(instance_id, owner)
                    log.info(
                        "instance left the live view: it said so",
                        extra={"instance_id": instance_id},
                    )
                else:
                    self._record(report, owner)
                policy = self._placer.policy
                yield placer_pb2.HeartbeatResponse(
                    sequence=report.sequence,
                    interval=duration(policy.heartbeat_interval_s),
                    timeout=duration(policy.heartbeat_timeout_s),
                )
        finally:
            if instance_id is not None:
                self._placer.registry.stream_closed(instance_id, owner)

    def _record(self, report: types_pb2.InstanceReport, owner: object) -> None:
        self._placer.registry.report(
            instance_id=report.instance_id,
            platform=Platform(report.platform),
            address=report.address,
            capacity_total=report.capacity_total,
            capacity_free=report.capacity_free,
            models=[(m.name, m.version) for m in report.models],
            report=report,
            owner=owner,
            recent_latency_p95_s=seconds(report.recent_latency_p95),
        )

    def WatchResources(self, request, context):
        interval = _DEFAULT_WATCH_INTERVAL_S
        if request.HasField("min_interval"):
            interval = max(_MIN_WATCH_INTERVAL_S, seconds(request.min_interval))
        registry = self._placer.registry
        seen = -1
        while context.is_active() and not self._stopping.is_set():
            version = registry.wait_for_change(seen, timeout=interval)
            if version != seen:
                seen = version
                yield _resource_view(registry.live())
                self._stopping.wait(interval)

    def GetPolicy(self, request, context):
        return placer_pb2.GetPolicyResponse(policy=_policy_message(self._placer.policy))

    def UpdatePolicy(self, request, context):
        changes = _policy_changes(request.policy, request.update_mask.paths)
        return placer_pb2.UpdatePolicyResponse(
            policy=_policy_message(self._placer.update_policy(**changes))
        )


def _request_of(message, data_size: int) -> Request:
    return Request(message.request_id, message.model.name, message.model.version, data_size)


def _check_report(report: types_pb2.InstanceReport, stream_instance_id: str | None) -> None:
    where = f"heartbeat from {report.instance_id!r}" if report.instance_id else "heartbeat"
    if not report.instance_id:
        raise InvalidArgument("heartbeat without instance_id; every report must name its instance")
    if stream_instance_id is not None and report.instance_id != stream_instance_id:
        raise InvalidArgument(
            f"{where}: this stream reports for {stream_instance_id!r}; open one stream per instance"
        )
    if report.platform not in Platform._value2member_map_:
        raise InvalidArgument(f"{where}: platform must be FLASK, DOCKER or SERVERLESS")
    if not report.address or ":" not in report.address:
        raise InvalidArgument(f"{where}: address must be host:port, not {report.address!r}")
    if report.capacity_free > report.capacity_total:
        raise InvalidArgument(
            f"{where}: capacity_free ({report.capacity_free}) is more than capacity_total "
            f"({report.capacity_total})"
        )
    if any(not model.name for model in report.models):
        raise InvalidArgument(f"{where}: every model the instance serves needs a name")


_POLICY_FIELDS = {
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
    "placement_rule": ("placement_rule", lambda p: Rule(p.placement_rule or Rule.PAPER)),
}


def _policy_changes(message: placer_pb2.Policy, paths) -> dict:
    paths = list(paths) or list(_POLICY_FIELDS)
    unknown = [path for path in paths if path not in _POLICY_FIELDS]
    if unknown:
        raise InvalidArgument(
            f"update_mask names unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(_POLICY_FIELDS)}"
        )
    if message.pinned_platform not in (0, *Platform._value2member_map_):
        raise InvalidArgument("pinned_platform must be UNSPECIFIED, FLASK, DOCKER or SERVERLESS")
    if message.placement_rule not in (0, *Rule._value2member_map_):
        raise InvalidArgument(
            "placement_rule must be UNSPECIFIED, PAPER, CAPACITY_AWARE or LATENCY_AWARE"
        )
    return {_POLICY_FIELDS[path][0]: _POLICY_FIELDS[path][1](message) for path in paths}


def _policy_message(policy: Policy) -> placer_pb2.Policy:
    return placer_pb2.Policy(
        frequency_threshold_rps=policy.frequency_threshold_rps,
        data_size_threshold_bytes=policy.data_size_threshold_bytes,
        frequency_window=duration(policy.frequency_window_s),
        heartbeat_timeout=duration(policy.heartbeat_timeout_s),
        pinned_platform=policy.pinned_platform or 0,
        fallback_enabled=policy.fallback_enabled,
        placement_rule=policy.placement_rule,
    )


def _placement_message(placement: Placement) -> types_pb2.Placement:
    inputs = placement.inputs
    return types_pb2.Placement(
        request_id=placement.request_id,
        platform=placement.platform or 0,
        instance_id=placement.instance_id,
        instance_address=placement.instance_address,
        branch=placement.branch,
        inputs=types_pb2.PlacementInputs(
            request_frequency_rps=inputs.f_t,
            data_size_bytes=inputs.r_d,
            frequency_threshold_rps=inputs.frequency_threshold,
            data_size_threshold_bytes=inputs.size_threshold,
            flask_available=inputs.flask_free_slots > 0,
            docker_available=inputs.docker_free_slots > 0,
            flask_free_slots=inputs.flask_free_slots,
            docker_free_slots=inputs.docker_free_slots,
            serverless_free_slots=inputs.serverless_free_slots,
            **{
                f"{platform.name.lower()}_recent_latency_p95": duration(latency)
                for platform, latency in (inputs.recent_p95_s or {}).items()
            },
        ),
        decision_time=duration(placement.decision_seconds),
    )


def _resource_view(instances) -> placer_pb2.WatchResourcesResponse:
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    free = dict.fromkeys(Platform, 0)
    views = []
    for instance in instances:
        free[instance.platform] += instance.effective_free
        last_report = timestamp_pb2.Timestamp()
        last_report.FromNanoseconds(int(instance.last_report_time * 1e9))
        views.append(
            placer_pb2.InstanceView(
                report=instance.report,
                sent_since_report=max(0, instance.sent_since_report),
                effective_free=instance.effective_free,
                last_report_time=last_report,
            )
        )
    return placer_pb2.WatchResourcesResponse(
        time=now,
        instances=views,
        flask_free_slots=free[Platform.FLASK],
        docker_free_slots=free[Platform.DOCKER],
        serverless_free_slots=free[Platform.SERVERLESS],
    )


def _status_code(error) -> int:
    return 0 if error is None else status_of(error).value[0]

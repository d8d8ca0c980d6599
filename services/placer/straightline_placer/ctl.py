"""straightline-placerctl: a command line for a running placer. Shows and changes its policy at
run time, shows its live view of the platforms, asks where a request would go, and sends an
image through Infer with a trace id to look up in Jaeger.

    python -m straightline_placer.ctl [--placer 127.0.0.1:50051] COMMAND ...
"""

import argparse
import mimetypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from opentelemetry import trace

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.config import argparse_type, parse_bool, parse_non_negative_int
from straightline_common.errors import Unauthenticated
from straightline_common.telemetry import (
    configure_tracing,
    current_trace_id,
    metadata_with_context,
)
from straightline_common.timeconv import seconds

# The generated stub has no annotations.
PlacerStub = Any

POLICY_FIELDS = placer_pb2.Policy.DESCRIPTOR.fields_by_name
SETTABLE = [name for name, f in POLICY_FIELDS.items() if not f.is_repeated]


class UsageError(Exception):
    """A command line that cannot be turned into a request."""


def enum_prefix(enum_descriptor: EnumDescriptor) -> str:
    """What every value's name starts with: PLATFORM_ of PLATFORM_UNSPECIFIED."""
    return enum_descriptor.values[0].name.removesuffix("UNSPECIFIED")


def enum_value_name(enum_type: EnumDescriptor, text: str) -> str:
    """An enum value by its full name or by its name without the type's prefix, any case,
    '-' for '_' (`docker` for PLATFORM_DOCKER); `none` for the unset value."""
    wanted = text.strip().upper().replace("-", "_")
    names = [value.name for value in enum_type.values]
    prefix = enum_prefix(enum_type)
    if wanted == "NONE":
        return names[0]
    for name in names:
        if wanted in (name, name.removeprefix(prefix)):
            return name
    choices = ", ".join(name.removeprefix(prefix).lower().replace("_", "-") for name in names[1:])
    raise UsageError(f"{text!r} is not one of: {choices}, none")


def json_value(field: Any, text: str) -> Any:
    """The command line's text as protobuf's JSON mapping wants it for `field`."""
    if field.enum_type is not None:
        return enum_value_name(field.enum_type, text)
    if field.type == FieldDescriptor.TYPE_BOOL:
        try:
            return parse_bool(text)
        except ValueError:
            raise UsageError(f"{field.name}: {text!r} is not true or false") from None
    return text  # numbers and durations ("10s") parse from their JSON strings


def policy_update(assignments: list[str]) -> placer_pb2.UpdatePolicyRequest:
    """`field=value` pairs (field names of the Policy message) as an UpdatePolicyRequest that
    changes those fields only."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, equals, text = assignment.partition("=")
        field_name, dot, model = name.strip().partition(".")
        if equals and dot and field_name == "latency_objectives":
            values.setdefault(field_name, {})[model] = text  # latency_objectives.MODEL=0.3s
            continue
        field = POLICY_FIELDS.get(name.strip())
        if not equals or field is None or field.is_repeated:
            raise UsageError(
                f"{assignment!r} is not field=value with a field of the policy: "
                f"{', '.join(SETTABLE)}, or latency_objectives.MODEL (platform_settings: the "
                "placer's config file, or UpdatePolicy)"
            )
        values[field.name] = json_value(field, text)
    try:
        policy = json_format.ParseDict(values, placer_pb2.Policy())
    except json_format.ParseError as error:
        raise UsageError(str(error)) from None
    return placer_pb2.UpdatePolicyRequest(
        policy=policy, update_mask=field_mask_pb2.FieldMask(paths=list(values))
    )


def short_name(enum_type: EnumTypeWrapper, number: int) -> str:
    return enum_type.Name(number).removeprefix(enum_prefix(enum_type.DESCRIPTOR)).lower()


def format_policy(policy: placer_pb2.Policy) -> str:
    pinned = short_name(types_pb2.Platform, policy.pinned_platform)
    rule = short_name(types_pb2.PlacementRule, policy.placement_rule)
    rows = [
        ("frequency_threshold_rps (F)", f"{policy.frequency_threshold_rps:g} requests/s"),
        ("data_size_threshold_bytes (D)", f"{policy.data_size_threshold_bytes:,} bytes"),
        ("frequency_window", f"{seconds(policy.frequency_window):g} s"),
        ("heartbeat_timeout", f"{seconds(policy.heartbeat_timeout):g} s"),
        ("pinned_platform", "none (Algorithm 1 places)" if pinned == "unspecified" else pinned),
        ("fallback_enabled", str(policy.fallback_enabled).lower()),
        ("keep_batches_together", str(policy.keep_batches_together).lower()),
        ("slo_attainment_target", f"{policy.slo_attainment_target:g}"),
        ("shed_late_requests", str(policy.shed_late_requests).lower()),
        ("placement_rule", "paper" if rule == "unspecified" else rule.replace("_", "-")),
        ("default_latency_objective", f"{milliseconds(policy.default_latency_objective)} ms"),
        *(
            (f"latency_objectives.{model}", f"{milliseconds(objective)} ms")
            for model, objective in sorted(policy.latency_objectives.items())
        ),
        *(
            (f"platform_settings.{short_name(types_pb2.Platform, s.platform)}", _settings(s))
            for s in policy.platform_settings
        ),
    ]
    return "\n".join(f"{name:<31}{value}" for name, value in rows)


def free_slots(platforms: Iterable[types_pb2.PlatformState]) -> str:
    """ "flask 3, docker 1, serverless 0": the free slots of a list of PlatformState."""
    return ", ".join(
        f"{short_name(types_pb2.Platform, state.platform)} {state.free_slots}"
        for state in platforms
    )


def _settings(settings: placer_pb2.PlatformSettings) -> str:
    return (
        f"${settings.price_per_instance_hour:g}/instance-hour, ${settings.price_per_gb_second:g}"
        f"/GB-s, ${settings.price_per_request:g}/request, {settings.memory_mb} MB, round trip "
        f"{milliseconds(settings.network_round_trip)} ms, at most "
        f"{settings.max_request_bytes:,} bytes"
        + (f", on host {settings.host} ({settings.host_cores} cores)" if settings.host else "")
        + _batching(settings.batching)
    )


def _batching(limits: types_pb2.BatchingLimits) -> str:
    """The policy's ceilings on the platform's batches, when it sets any."""
    ceilings = [f"at most {limits.max_batch_size}"] if limits.max_batch_size else []
    if limits.HasField("max_queue_delay"):
        ceilings.append(f"waiting at most {milliseconds(limits.max_queue_delay)} ms")
    return f", batches {' and '.join(ceilings)}" if ceilings else ""


def format_instances(view: placer_pb2.WatchResourcesResponse) -> str:
    lines = [
        f"free slots: {free_slots(view.platforms) or 'none'}",
        f"{'instance':<28}{'platform':<12}{'address':<22}{'free':>5}{'total':>6}"
        f"{'in flight':>10}{'queued':>7}  models",
    ]
    for instance in view.instances:
        report = instance.report
        models = ", ".join(m.name + (f":{m.version}" if m.version else "") for m in report.models)
        lines.append(
            f"{report.instance_id:<28}{short_name(types_pb2.Platform, report.platform):<12}"
            f"{report.address:<22}{instance.effective_free:>5}{report.capacity_total:>6}"
            f"{report.in_flight:>10}{report.queue_depth:>7}  {models}"
        )
    if not view.instances:
        lines.append("(no live instance)")
    return "\n".join(lines)


def format_placement(placement: types_pb2.Placement) -> str:
    inputs = placement.inputs
    branch = short_name(types_pb2.Branch, placement.branch)
    lines = [
        f"{short_name(types_pb2.Platform, placement.platform)} {placement.instance_id} ({branch})",
        f"  f_t {inputs.request_frequency_rps:.2f}/s against F {inputs.frequency_threshold_rps:g}; "
        f"r_d {inputs.data_size_bytes:,} B against D {inputs.data_size_threshold_bytes:,}; "
        f"free slots: {free_slots(inputs.platforms)}",
    ]
    if placement.branch == types_pb2.BRANCH_FASTEST_FREE:
        compared = [
            f"{short_name(types_pb2.Platform, s.platform)} {milliseconds(s.recent_latency_p95)} ms"
            for s in inputs.platforms
            if s.free_slots
        ]
        lines.append(f"  recent p95 of free platforms: {', '.join(compared)}")
    if inputs.HasField("latency_objective"):
        lines.append(format_predictions(inputs))
    return "\n".join(lines)


def format_predictions(inputs: types_pb2.PlacementInputs) -> str:
    predicted = [
        f"{short_name(types_pb2.Platform, s.platform)} "
        + (
            f"{milliseconds(s.predicted_latency)} ms{_margin(s)} ${s.predicted_cost_usd:.8f}"
            if s.HasField("predicted_latency")
            else "cannot take it"
        )
        for s in inputs.platforms
    ]
    deadline = (
        f", deadline {milliseconds(inputs.deadline)} ms" if inputs.HasField("deadline") else ""
    )
    return (
        f"  predicted: {', '.join(predicted)} (objective "
        f"{milliseconds(inputs.latency_objective)} ms{deadline})"
    )


def _margin(state: types_pb2.PlatformState) -> str:
    if not state.HasField("prediction_margin"):
        return ""
    return f" (margin {seconds(state.prediction_margin) * 1e3:+.1f})"


def milliseconds(duration: duration_pb2.Duration) -> str:
    return f"{seconds(duration) * 1e3:.1f}"


def format_answer(answer: placer_pb2.InferResponse, trace_id: str) -> str:
    timings = answer.platform_timings
    served = short_name(types_pb2.Platform, answer.served_platform)
    fell_back = " after falling back" if answer.fell_back else ""
    lines = [
        f"placed: {format_placement(answer.placement)}",
        f"served by {served} {answer.served_instance_id}{fell_back} in "
        f"{milliseconds(answer.total)} ms (queued {milliseconds(timings.queue)}, cold start "
        f"{milliseconds(timings.cold_start)}, execution {milliseconds(timings.execution)})",
    ]
    lines += [f"  {c.label:<20}{c.score:.4f}" for c in answer.classes]
    if trace_id:
        lines.append(f"trace {trace_id}")
    return "\n".join(lines)


def show_policy(stub: PlacerStub, args: argparse.Namespace) -> str:
    return format_policy(stub.GetPolicy(placer_pb2.GetPolicyRequest(), timeout=args.timeout).policy)


def set_policy(stub: PlacerStub, args: argparse.Namespace) -> str:
    request = policy_update(args.assignments)
    return format_policy(stub.UpdatePolicy(request, timeout=args.timeout).policy)


def show_instances(stub: PlacerStub, args: argparse.Namespace) -> str:
    stream = stub.WatchResources(placer_pb2.WatchResourcesRequest(), timeout=args.timeout)
    try:
        return format_instances(next(stream))
    finally:
        stream.cancel()


def place(stub: PlacerStub, args: argparse.Namespace) -> str:
    request = placer_pb2.PlaceRequest(
        model=types_pb2.ModelRef(name=args.model, version=args.version),
        data_size_bytes=args.bytes,
    )
    return format_placement(stub.Place(request, timeout=args.timeout).placement)


def infer(stub: PlacerStub, args: argparse.Namespace) -> str:
    image = Path(args.image)
    try:
        payload = image.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {image}: {error.strerror}") from None
    content_type = args.content_type or mimetypes.guess_type(image.name)[0]
    if not content_type:
        raise UsageError(f"cannot tell the content type of {image.name}: give --content-type")
    request = placer_pb2.InferRequest(
        model=types_pb2.ModelRef(name=args.model, version=args.version),
        payload=payload,
        content_type=content_type,
        top_k=args.top_k,
    )
    with trace.get_tracer("straightline.placerctl").start_as_current_span("placerctl.infer"):
        trace_id = current_trace_id()
        answer = stub.Infer(request, timeout=args.timeout, metadata=metadata_with_context())
    return format_answer(answer, trace_id)


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="straightline-placerctl", description=__doc__.split("\n\n")[0]
    )
    top.add_argument(
        "--placer",
        default=os.environ.get("STRAIGHTLINE_PLACER", "127.0.0.1:50051"),
        help="the placer's gRPC address (env STRAIGHTLINE_PLACER; default 127.0.0.1:50051)",
    )
    top.add_argument(
        "--timeout", type=argparse_type(positive_seconds), default=60.0, help="seconds per call"
    )
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("policy", help="the policy in force").set_defaults(run=show_policy)
    setting = commands.add_parser(
        "set",
        help="change fields of the policy, e.g. frequency_threshold_rps=20 "
        "frequency_window=5s pinned_platform=docker fallback_enabled=false",
    )
    setting.add_argument("assignments", nargs="+", metavar="field=value")
    setting.set_defaults(run=set_policy)
    commands.add_parser("instances", help="the live instances and their free slots").set_defaults(
        run=show_instances
    )
    placing = commands.add_parser("place", help="where a request of a given size would go")
    placing.add_argument(
        "--bytes", type=argparse_type(parse_non_negative_int), required=True, help="the data size"
    )
    placing.set_defaults(run=place)
    inferring = commands.add_parser("infer", help="send an image through Infer")
    inferring.add_argument("image")
    inferring.add_argument("--top-k", type=argparse_type(parse_non_negative_int), default=3)
    inferring.add_argument("--content-type", default="", help="default: from the file name")
    inferring.set_defaults(run=infer)
    for command in (placing, inferring):
        command.add_argument("--model", required=True)
        command.add_argument("--version", default="", help="default: the newest")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        channel = open_channel(args.placer, Role.OPERATOR)
    except Unauthenticated as error:
        print(f"straightline-placerctl: {error}", file=sys.stderr)
        return 2
    with channel:
        stub = placer_pb2_grpc.PlacerServiceStub(channel)
        try:
            print(args.run(stub, args))
        except UsageError as error:
            print(f"straightline-placerctl: {error}", file=sys.stderr)
            return 2
        except grpc.RpcError as error:
            print(
                f"straightline-placerctl: {error.code().name}: {error.details()}", file=sys.stderr
            )
            return 1
    return 0


def run() -> None:
    """The console entry point: tracing from the OTEL_* variables, as every service."""
    provider = configure_tracing("straightline-placerctl")
    code = main()
    if provider is not None:
        provider.shutdown()  # exports the infer span before the process ends
    sys.exit(code)


if __name__ == "__main__":
    run()

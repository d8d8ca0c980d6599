"""The demo's request stream: phases sent open loop to the placer's Infer, each request
printed as it is answered (branch of Algorithm 1, platform, latency, cold start, trace id),
then a summary per platform."""

import random
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import grpc
from opentelemetry import trace

from scripts.localstack import PLATFORM_NAMES
from straightline.v1 import placer_pb2, types_pb2
from straightline_common.telemetry import metadata_with_context
from straightline_common.timeconv import seconds

tracer = trace.get_tracer("straightline.demo")


@dataclass(frozen=True)
class Phase:
    name: str
    rate_rps: float
    seconds: float
    kind: str  # which images: "small" or "large"


PHASES = (
    Phase("quiet: small images at 2/s", 2, 4, "small"),
    Phase("large images (over D) at 1/s", 1, 3, "large"),
    Phase("burst: small images at 25/s (over F)", 25, 2, "small"),
    Phase("cool-down: small images at 2/s", 2, 3, "small"),
)


@dataclass
class Outcome:
    size: int
    placement: object = None
    served: str = ""
    fell_back: bool = False
    label: str = ""
    cold_start_ms: float = 0.0
    latency_ms: float = 0.0
    trace_id: str = ""
    error: str = ""


def send(stub, model: types_pb2.ModelRef, image: tuple[bytes, str]) -> Outcome:
    payload, content_type = image
    outcome = Outcome(len(payload))
    request = placer_pb2.InferRequest(
        model=model, payload=payload, content_type=content_type, top_k=1
    )
    with tracer.start_as_current_span("demo.request") as span:
        outcome.trace_id = format(span.get_span_context().trace_id, "032x")
        started = time.perf_counter()
        try:
            answer = stub.Infer(request, timeout=120, metadata=metadata_with_context())
        except grpc.RpcError as error:
            outcome.error = f"{error.code().name}: {error.details()}"
        else:
            outcome.placement = answer.placement
            outcome.served = PLATFORM_NAMES[answer.served_platform]
            outcome.fell_back = answer.fell_back
            outcome.label = answer.classes[0].label if answer.classes else ""
            outcome.cold_start_ms = seconds(answer.platform_timings.cold_start) * 1e3
        outcome.latency_ms = (time.perf_counter() - started) * 1e3
    return outcome


def free_slots(platforms) -> str:
    """ "F1 D0 S4": the free slots of each platform the placer saw, by initial."""
    return " ".join(
        f"{types_pb2.Platform.Name(s.platform).removeprefix('PLATFORM_')[0]}{s.free_slots}"
        for s in platforms
    )


def print_outcome(index: int, outcome: Outcome) -> None:
    if outcome.error:
        print(f"{index:4d} {outcome.size:>9,d} B  FAILED {outcome.error}")
        return
    inputs = outcome.placement.inputs
    branch = types_pb2.Branch.Name(outcome.placement.branch).removeprefix("BRANCH_").lower()
    notes = " (fell back)" if outcome.fell_back else ""
    if outcome.cold_start_ms:
        notes += f" (cold start {outcome.cold_start_ms:.0f} ms)"
    print(
        f"{index:4d} {outcome.size:>9,d} B  f_t={inputs.request_frequency_rps:5.1f}/s  "
        f"free {free_slots(inputs.platforms):<12} "
        f"{branch:<26} -> {outcome.served:<10} {outcome.label:<6} "
        f"{outcome.latency_ms:8.1f} ms  trace {outcome.trace_id}{notes}"
    )


def run_phases(stub, model, images: dict[str, list[tuple[bytes, str]]], seed: int):
    """Open loop: requests leave on schedule whatever the answers do."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    threads = []

    def one(image) -> None:
        outcome = send(stub, model, image)
        with lock:
            outcomes.append(outcome)
            print_outcome(len(outcomes), outcome)

    for phase in PHASES:
        print(f"\n-- {phase.name} --")
        start = time.monotonic()
        for k in range(int(phase.rate_rps * phase.seconds)):
            time.sleep(max(0.0, start + k / phase.rate_rps - time.monotonic()))
            thread = threading.Thread(target=one, args=(rng.choice(images[phase.kind]),))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    return outcomes


def print_summary(outcomes: list[Outcome]) -> None:
    branches = defaultdict(int)
    for outcome in outcomes:
        if outcome.placement is not None:
            branches[types_pb2.Branch.Name(outcome.placement.branch)] += 1
    print(
        "\nbranches of Algorithm 1: " + ", ".join(f"{b} {n}" for b, n in sorted(branches.items()))
    )
    by_platform = defaultdict(list)
    for outcome in outcomes:
        by_platform[outcome.served or "failed"].append(outcome)
    print("\nplatform     requests  median ms   p95 ms  cold starts  fell back")
    for platform in ("flask", "docker", "serverless", "failed"):
        group = by_platform.get(platform, [])
        if not group:
            continue
        latencies = sorted(o.latency_ms for o in group)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        print(
            f"{platform:<12} {len(group):8d} {statistics.median(latencies):10.1f} {p95:8.1f} "
            f"{sum(o.cold_start_ms > 0 for o in group):12d} {sum(o.fell_back for o in group):10d}"
        )

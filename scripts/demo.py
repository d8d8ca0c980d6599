"""The main job: StraightLine placing a stream of requests, end to end, on this machine.

Starts the placer as a local process and three simulated adapter instances (Flask, Docker,
serverless) that heartbeat to it, then sends a quiet phase of moderate requests, a few large
ones, and a burst of small ones above F, printing where each went and why (the branch of
Algorithm 1), its latency and its trace id. Ends with a table per platform and stops
everything it started.

The simulated adapters stand in for the real platforms (a fixed service time instead of a
model); `make demo` runs this.
"""

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import grpc
from opentelemetry import trace

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.processes import ServiceProcess
from straightline_common.telemetry import configure_tracing, metadata_with_context
from straightline_inference.simulated import SimulatedAdapter

MODEL = types_pb2.ModelRef(name="demo")
PLATFORM_NAMES = {
    types_pb2.PLATFORM_FLASK: "flask",
    types_pb2.PLATFORM_DOCKER: "docker",
    types_pb2.PLATFORM_SERVERLESS: "serverless",
}
tracer = trace.get_tracer("straightline.demo")


@dataclass(frozen=True)
class Phase:
    name: str
    rate_rps: float
    seconds: float
    sizes: tuple[int, int]  # payload bytes, low and high


PHASES = (
    Phase("quiet: moderate requests at 3/s", 3, 4, (4_000, 120_000)),
    Phase("large requests (over D)", 2, 2, (400_000, 2_000_000)),
    Phase("burst: small requests at 40/s (over F)", 40, 3, (2_000, 40_000)),
    Phase("cool-down at 3/s", 3, 3, (4_000, 120_000)),
)


@dataclass
class Outcome:
    size: int
    placement: object = None
    served: str = ""
    fell_back: bool = False
    latency_ms: float = 0.0
    trace_id: str = ""
    error: str = ""


def start_adapters(placer_address: str) -> list[SimulatedAdapter]:
    adapters = [
        SimulatedAdapter(
            types_pb2.PLATFORM_FLASK,
            placer_address,
            capacity=2,
            service_time_s=0.1,
            instance_id="flask-1",
        ),
        SimulatedAdapter(
            types_pb2.PLATFORM_DOCKER,
            placer_address,
            capacity=2,
            queue_limit=16,
            service_time_s=0.15,
            instance_id="docker-1",
        ),
        SimulatedAdapter(
            types_pb2.PLATFORM_SERVERLESS,
            placer_address,
            capacity=32,
            service_time_s=0.06,
            instance_id="serverless-1",
        ),
    ]
    for adapter in adapters:
        adapter.start()
    for adapter in adapters:
        if not adapter.wait_registered(10):
            raise RuntimeError(f"{adapter.instance_id} could not register with the placer")
    return adapters


def send(stub, size: int, rng: random.Random) -> Outcome:
    outcome = Outcome(size)
    request = placer_pb2.InferRequest(
        model=MODEL, payload=rng.randbytes(size), content_type="image/jpeg"
    )
    with tracer.start_as_current_span("demo.request") as span:
        outcome.trace_id = format(span.get_span_context().trace_id, "032x")
        started = time.perf_counter()
        try:
            answer = stub.Infer(request, timeout=30, metadata=metadata_with_context())
        except grpc.RpcError as error:
            outcome.error = f"{error.code().name}: {error.details()}"
        else:
            outcome.placement = answer.placement
            outcome.served = PLATFORM_NAMES[answer.served_platform]
            outcome.fell_back = answer.fell_back
        outcome.latency_ms = (time.perf_counter() - started) * 1e3
    return outcome


def print_outcome(index: int, outcome: Outcome) -> None:
    if outcome.error:
        print(f"{index:4d} {outcome.size:>9,d} B  FAILED {outcome.error}")
        return
    inputs = outcome.placement.inputs
    branch = types_pb2.Branch.Name(outcome.placement.branch).removeprefix("BRANCH_").lower()
    fell_back = " (fell back)" if outcome.fell_back else ""
    print(
        f"{index:4d} {outcome.size:>9,d} B  f_t={inputs.request_frequency_rps:5.1f}/s  "
        f"S_F={inputs.flask_free_slots} S_D={inputs.docker_free_slots}  "
        f"{branch:<26} -> {outcome.served:<10}{fell_back} {outcome.latency_ms:7.1f} ms  "
        f"trace {outcome.trace_id}"
    )


def run_phases(stub, seed: int) -> list[Outcome]:
    """Open loop: requests leave on schedule whatever the answers do."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    threads = []
    counter = 0

    def one(size: int, payload_seed: int) -> None:
        nonlocal counter
        outcome = send(stub, size, random.Random(payload_seed))
        with lock:
            counter += 1
            outcomes.append(outcome)
            print_outcome(counter, outcome)

    for phase in PHASES:
        print(f"\n-- {phase.name} --")
        start = time.monotonic()
        for k in range(int(phase.rate_rps * phase.seconds)):
            time.sleep(max(0.0, start + k / phase.rate_rps - time.monotonic()))
            size = rng.randint(*phase.sizes)
            thread = threading.Thread(target=one, args=(size, rng.getrandbits(32)))
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
    print("\nplatform     requests  median ms   p95 ms  fell back")
    for platform in ("flask", "docker", "serverless", "failed"):
        group = by_platform.get(platform, [])
        if not group:
            continue
        latencies = sorted(o.latency_ms for o in group)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
        print(
            f"{platform:<12} {len(group):8d} {statistics.median(latencies):10.1f} {p95:8.1f} "
            f"{sum(o.fell_back for o in group):10d}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    configure_tracing("straightline-demo")
    with tempfile.TemporaryDirectory(prefix="straightline-demo-") as workdir:
        placer = ServiceProcess(
            "straightline_placer",
            ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
            Path(workdir),
        )
        adapters = []
        try:
            placer.wait_ready()
            print(
                f"placer on {placer.address}, metrics on "
                f"http://127.0.0.1:{placer.ports['metrics']}/metrics"
            )
            adapters = start_adapters(placer.address)
            with grpc.insecure_channel(placer.address) as channel:
                stub = placer_pb2_grpc.PlacerServiceStub(channel)
                policy = stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy
                print(
                    f"policy: F = {policy.frequency_threshold_rps} requests/s, "
                    f"D = {policy.data_size_threshold_bytes:,} bytes"
                )
                outcomes = run_phases(stub, args.seed)
            print_summary(outcomes)
        finally:
            for adapter in adapters:
                adapter.stop()
            placer.terminate()
    return 0 if all(not o.error for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

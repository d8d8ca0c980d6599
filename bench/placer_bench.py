"""Placer benchmark: the cost of one decision in-process, and the Place RPC against a bare
gRPC echo served the same way, with tracing on (exported over OTLP) and off.

Run from the repository root: `make bench` (or `python -m bench.placer_bench`).
Targets (issue 2): a decision under 5 us median; Place within 1.5x of the echo, tracing on.
Issue 13: under the SLO-aware rule, the core's decision (predictions included) under 50 us
median, and Place within 1.5x of the echo. Issue 15: Place within 1.5x of an echo served the
same way with mutual TLS on every hop.
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench import report
from scripts import localstack
from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common import devcerts, tls
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.processes import ServiceProcess
from straightline_common.telemetry import configure_tracing
from straightline_inference.simulated import SimulatedAdapter
from straightline_placer import algorithm
from straightline_placer.algorithm import Rule
from straightline_placer.core import Placer, Request
from straightline_placer.metrics import PlacerMetrics
from straightline_placer.policy import Policy
from straightline_placer.registry import InstanceStats

# What a warm instance reports: service times in four size buckets, a recent cold start.
_STATS = InstanceStats(
    warm_environments=2,
    warm_slots=4,
    queue_limit=4,
    recent_latency_p50_s=0.02,
    recent_latency_p95_s=0.05,
    recent_cold_start_s=1.5,
    service_time_bounds=(16384, 65536, 262144, 2**64),
    service_time_medians_s=(0.01, 0.02, 0.05, 0.3),
)


def time_calls(call, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        started = clock()
        call()
        samples.append(clock() - started)
    return samples


def time_alternately(first, second, n: int, warmup: int) -> tuple[list[float], list[float]]:
    """Times two calls in alternation, so that both see the same machine at the same time."""
    for _ in range(warmup):
        first()
        second()
    clock = time.perf_counter
    first_samples, second_samples = [], []
    for _ in range(n):
        started = clock()
        first()
        middle = clock()
        second()
        first_samples.append(middle - started)
        second_samples.append(clock() - middle)
    return first_samples, second_samples


def run_simulated_adapters(placer_address: str, stop, certs: Path | None) -> None:
    """In a process of its own, so that the adapters do not compete with the timed client;
    with `certs`, as adapter identities over mutual TLS."""
    if certs is not None:
        os.environ.update(tls_environment(certs, "adapter-flask"))
    adapters = [SimulatedAdapter(p, placer_address).start() for p in algorithm.Platform]
    stop.wait()
    for adapter in adapters:
        adapter.stop()


def bench_decision(n: int) -> dict:
    """The pure Algorithm 1, and the core's whole decision (window, live view, rule,
    metrics, an SDK span not exported) with three live instances, under the paper's rule and
    the SLO-aware one (whose decision includes the three predictions)."""
    pure = time_calls(lambda: algorithm.place(3.0, 5000, 10.0, 262144, True, True), n, 1000)
    configure_tracing("bench", environ={})  # SDK spans, recorded but not exported
    request = Request("r", "m", "", 5000)
    results = {"algorithm_1": report.summary(pure)}
    for name, rule in (("core_place", Rule.PAPER), ("core_place_slo", Rule.SLO_AWARE)):
        placer = placer_with_instances(rule)
        results[name] = report.summary(time_calls(lambda p=placer: p.place(request), n, 1000))
    return results


def placer_with_instances(rule: Rule) -> Placer:
    policy = Policy(frequency_threshold_rps=1e9, heartbeat_timeout_s=3600, placement_rule=rule)
    placer = Placer(policy, forwarder=None, metrics=PlacerMetrics())
    for index, platform in enumerate(algorithm.Platform):
        placer.registry.report(
            instance_id=f"i{index}",
            platform=platform,
            address="127.0.0.1:1",
            capacity_total=4,
            capacity_free=4,
            models=[("m", "1")],
            report=None,
            owner=index,
            stats=_STATS,
        )
    return placer


def bench_rpcs(
    workdir: Path, n: int, tracing: bool, rule: str = "paper", mtls: bool = False
) -> dict:
    """Place against the echo; with `mtls`, every process (placer, echo, adapters, this
    client) on mutual TLS with a certificate of its own, else on bearer tokens."""
    sink = ServiceProcess("bench.otlp_sink", [], workdir).wait_ready()
    env = (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.ports['grpc']}"}
        if tracing
        else {"OTEL_SDK_DISABLED": "true"}
    )
    certs = workdir / "certs" if mtls else None
    if certs is not None:
        devcerts.make_all(certs, days=1)
        env = {**env, **tls_environment(certs, "placer")}  # the echo serves as the placer does
    client_tls = tls.tls_files(_tls_settings(certs, "client")) if certs else None
    placer = ServiceProcess(
        "straightline_placer",
        [
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--frequency-threshold-rps",
            "1e9",
            "--placement-rule",
            rule,
            *localstack.tls_arguments(certs, "placer"),
        ],
        workdir,
        env,
    ).wait_ready()
    echo = ServiceProcess("bench.echo_server", [], workdir, env).wait_ready()
    stop_adapters = multiprocessing.Event()
    adapters = multiprocessing.Process(
        target=run_simulated_adapters, args=(placer.address, stop_adapters, certs)
    )
    adapters.start()
    try:
        with (
            open_channel(placer.address, Role.CLIENT, tls=client_tls) as placer_channel,
            open_channel(echo.address, Role.CLIENT, tls=client_tls) as echo_channel,
        ):
            stub = placer_pb2_grpc.PlacerServiceStub(placer_channel)
            request = placer_pb2.PlaceRequest(
                model=types_pb2.ModelRef(name="demo"), data_size_bytes=5000
            )
            echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
            payload = request.SerializeToString()
            wait_for_instances(stub, request)
            place, bare = time_alternately(
                lambda: stub.Place(request), lambda: echo_call(payload), n, 500
            )
    finally:
        stop_adapters.set()
        adapters.join()
        for process in (placer, echo, sink):
            process.terminate()
    place_summary, echo_summary = report.summary(place), report.summary(bare)
    return {
        "place": place_summary,
        "echo": echo_summary,
        "ratio_median": round(place_summary["median_us"] / echo_summary["median_us"], 2),
        "ratio_p99": round(place_summary["p99_us"] / echo_summary["p99_us"], 2),
    }


def _tls_settings(certs: Path, identity: str) -> dict[str, str]:
    return {
        "tls_cert": str(certs / f"{identity}.pem"),
        "tls_key": str(certs / f"{identity}.key"),
        "tls_client_ca": str(certs / "ca.pem"),
    }


def tls_environment(certs: Path, identity: str) -> dict[str, str]:
    """The STRAIGHTLINE_TLS_* variables of `identity`'s certificate."""
    settings = _tls_settings(certs, identity)
    return {
        tls.CERT_ENV: settings["tls_cert"],
        tls.KEY_ENV: settings["tls_key"],
        tls.CA_ENV: settings["tls_client_ca"],
    }


def wait_for_instances(stub, request, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if stub.Place(request).placement.instance_id:
                return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


_RPC_RUNS = {
    "tracing_on": "tracing on, OTLP export",
    "tracing_off": "tracing off",
    "slo_tracing_on": "SLO-aware rule, tracing on, OTLP export",
    "slo_tracing_off": "SLO-aware rule, tracing off",
    "mtls_tracing_on": "mutual TLS everywhere, tracing on, OTLP export",
    "mtls_tracing_off": "mutual TLS everywhere, tracing off",
}


def markdown(results: dict) -> str:
    m, d = results["machine"], results["decision"]
    lines = [
        "## Placer (issues 2 and 13)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, grpcio "
        f"{m['grpcio']}, opentelemetry-sdk {m['opentelemetry-sdk']}. "
        f"Command: `{results['command']}`. {results['date']}.",
        "",
        "| measure | n | median | p99 | target |",
        "| --- | --- | --- | --- | --- |",
        f"| Algorithm 1, pure function | {d['algorithm_1']['n']} | "
        f"{d['algorithm_1']['median_us']} us | {d['algorithm_1']['p99_us']} us | < 5 us median |",
        f"| whole decision in the core (window, live view, Algorithm 1, span, metrics) | "
        f"{d['core_place']['n']} | {d['core_place']['median_us']} us | "
        f"{d['core_place']['p99_us']} us | |",
        f"| whole decision in the core, SLO-aware rule (three predictions, span, metrics) | "
        f"{d['core_place_slo']['n']} | {d['core_place_slo']['median_us']} us | "
        f"{d['core_place_slo']['p99_us']} us | < 50 us median |",
        f"| ratio SLO-aware / paper's rule, whole decision | | "
        f"{d['core_place_slo']['median_us'] / d['core_place']['median_us']:.2f}x | | |",
    ]
    for mode, label in _RPC_RUNS.items():
        r = results[mode]
        lines += [
            f"| `Place` RPC, {label} | {r['place']['n']} | {r['place']['median_us']} us | "
            f"{r['place']['p99_us']} us | <= 1.5x echo |",
            f"| bare echo RPC, {label} | {r['echo']['n']} | {r['echo']['median_us']} us | "
            f"{r['echo']['p99_us']} us | |",
            f"| ratio Place / echo, {label} | | {r['ratio_median']}x | {r['ratio_p99']}x | |",
        ]
    lines += [
        "",
        "Client, placer, echo, OTLP receiver and the three simulated adapter instances are "
        "separate processes on loopback. One call at a time (no concurrency), Place and echo "
        "alternately so that both see the same machine, after 500 warm-up pairs. The echo is "
        "served by the same `GrpcServer` (thread pool, interceptor with its SERVER span, "
        "health, reflection) as the placer; it echoes the serialized PlaceRequest.",
        "",
        "Reading: the decision itself (Algorithm 1) is far under its 5 us target. The whole "
        "decision in the core is dominated by the OpenTelemetry SDK span that carries the "
        "inputs (20-40 us per span on this CPU, with attribute validation); the window, the "
        "live view and Algorithm 1 together take a few microseconds. Place stays within the "
        "1.5x target at the median with tracing on; its p99 with export on is dominated by the "
        "batch exporter's thread serializing spans under the GIL. The SLO-aware rule adds "
        "three predictions and their span attributes (a predicted latency and cost per "
        "platform) to the decision; see the ratio rows for what that costs against the paper's "
        "rule in the same run. With mutual TLS on every hop (placer, echo, adapters and client "
        "each with a certificate of its own, roles from the certificates), the echo row is the "
        "same echo over the same TLS, so the ratio is what the placer adds on top of TLS; the "
        "TLS itself shows as the difference between the mutual-TLS rows and the token rows of "
        "the same run.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--rpcs", type=int, default=5_000)
    args = parser.parse_args()
    results = {"date": time.strftime("%Y-%m-%d"), "machine": report.machine()}
    results["command"] = " ".join(["python -m bench.placer_bench", *sys.argv[1:]])
    results["decision"] = bench_decision(args.decisions)
    with tempfile.TemporaryDirectory() as workdir:
        for mode in _RPC_RUNS:
            rule = "slo-aware" if mode.startswith("slo") else "paper"
            tracing, mtls = mode.endswith("tracing_on"), mode.startswith("mtls")
            results[mode] = bench_rpcs(Path(workdir), args.rpcs, tracing, rule, mtls)
    report.write("placer", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

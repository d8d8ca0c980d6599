"""The Docker platform with and without coalescing (issue 19), side by side.

One Docker adapter, one warm model-server container of 2 threads and a queue of 16, serving
the small test model; 8 closed-loop callers send JPEGs to the adapter's `Predict` (what the
placer sends), alternating the adapter without coalescing and with it (`--batch-size 8
--batch-delay-ms 2`), repeated. Beside each: answered/s, the median latency, and the CPU the
adapter and the container spent per answer. Needs the Docker engine and `make images`.

    python -m bench.coalescing_bench [--seconds 10] [--rounds 3]
"""

import argparse
import statistics
import tempfile
from pathlib import Path

import docker

from bench import report
from bench.batching_bench import jpegs
from bench.callers_bench import ENV, cpu_seconds
from bench.peers.__main__ import closed_loop, predict
from straightline.v1 import inference_pb2_grpc
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import make_classifier

MODEL = "small"
SETTINGS = {
    "without coalescing": [],
    "coalescing (batch 8, 2 ms)": ["--batch-size", "8", "--batch-delay-ms", "2"],
}


def docker_adapter(store: ModelStore, workdir: Path, name: str, arguments: list[str]):
    return ServiceProcess(
        "straightline_inference.adapter",
        [
            *("--platform", "docker", "--listen", "127.0.0.1:0", "--metrics-listen", "off"),
            *("--placer", "off", "--store", str(store.root), "--name", name),
            *("--max-containers", "1", "--min-warm", "1", "--threads-per-container", "2"),
            *("--queue-limit", "16", *arguments),
        ],
        workdir,
        ENV,
    ).wait_ready(timeout=240)


def container_cpu_seconds(engine, name: str) -> float:
    """The CPU time the adapter's one container has used so far (its cgroup, via the engine)."""
    [container] = engine.containers.list(
        filters={"label": f"straightline.owner={name}"}, ignore_removed=True
    )
    usage = container.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"]
    return float(usage) / 1e9


def bench_setting(store, engine, arguments, images, seconds, workdir, name) -> dict:
    adapter = docker_adapter(store, workdir, name, arguments)
    try:
        with open_channel(adapter.address, Role.PLACER) as channel:
            call = predict(inference_pb2_grpc.InferenceServiceStub(channel), MODEL)
            closed_loop(call, images, 3.0)  # warm: every worker's first call
            before = cpu_seconds(adapter.process.pid), container_cpu_seconds(engine, name)
            run = closed_loop(call, images, seconds)
            after = cpu_seconds(adapter.process.pid), container_cpu_seconds(engine, name)
            answered = max(1.0, run["rps"] * seconds)
            run["cpu_ms_per_answer"] = {
                "adapter": round((after[0] - before[0]) / answered * 1e3, 3),
                "container": round((after[1] - before[1]) / answered * 1e3, 3),
            }
            return run
    finally:
        adapter.terminate(timeout=60)


def markdown(results: dict) -> str:
    lines = [
        "## The Docker platform with and without coalescing (issue 19)",
        "",
        f"`python -m bench.coalescing_bench` on {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores): one Docker adapter, one warm container of 2 "
        "threads (queue 16), the small test model, 8 closed-loop callers on the adapter's "
        f"`Predict`, {results['seconds']:.0f} s per setting and round, "
        f"{results['rounds']} rounds in alternation, tracing off; medians of the rounds and "
        "their range; CPU per answer from /proc (adapter) and the container's cgroup.",
        "",
        "| setting | answered/s (range) | p50 ms | adapter CPU ms/answer | container CPU "
        "ms/answer | failed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results["runs"].items():
        rates = [r["rps"] for r in runs]

        def median(field: str, runs=runs) -> float:
            return statistics.median(r["cpu_ms_per_answer"][field] for r in runs)

        failures = sum(sum(r["failures"].values()) for r in runs)
        lines.append(
            f"| {name} | {statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f}) | "
            f"{statistics.median(r['p50_ms'] for r in runs):.1f} | {median('adapter'):.2f} | "
            f"{median('container'):.2f} | {failures} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images = jpegs()
    runs: dict[str, list[dict]] = {}
    engine = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="straightline-coalescing-") as scratch:
        workdir = Path(scratch)
        store = ModelStore(workdir / "models")
        make_classifier(store, MODEL)
        for round_ in range(args.rounds):
            for index, (setting, arguments) in enumerate(SETTINGS.items()):
                run_dir = workdir / f"{round_}-{index}"
                name = f"coalescing-bench-{round_}-{index}"
                run = bench_setting(store, engine, arguments, images, args.seconds, run_dir, name)
                runs.setdefault(setting, []).append(run)
                print(setting, run)
    engine.close()
    results = {
        "machine": report.machine(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "runs": runs,
    }
    report.write("coalescing", results, markdown(results))


if __name__ == "__main__":
    main()

"""Eight callers on one Flask adapter through the placer (issue 19: queue, do not refuse).

A real placer and a real Flask adapter with its model server, serving the small test model;
8 closed-loop callers send JPEGs through the placer's `Infer` for a while, every answer and
failure counted by its status (a request no platform takes is UNAVAILABLE from the placer).
Side by side in one run: the adapter's defaults (4 worker threads, a queue of what they drain
within 300 ms, at least 8), the paper's Flask with 2 threads and a queue of 8 (the default
before), and 2 threads refusing what it cannot start at once (`--queue-limit 0`, the first
behaviour); next to the model in this process, one image at a time (the first call left out).
Beside each: the CPU each process (placer, adapter, model server, the callers) spent per
answered request.

    python -m bench.callers_bench [--seconds 15]
"""

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc

from bench import report
from bench.batching_bench import in_process, jpegs
from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import make_classifier
from tests.support.procfs import children

CALLERS = 8
SETTINGS = {
    "defaults (4 threads, queue drained within 300 ms)": [],
    "2 threads, queue 8": ["--threads", "2", "--queue-limit", "8"],
    "2 threads, no queue": ["--threads", "2", "--queue-limit", "0"],
}
ENV = {"OTEL_SDK_DISABLED": "true"}


def closed_loop(stub, images: list[bytes], seconds: float) -> dict:
    """CALLERS threads calling Infer one request after another for `seconds`."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def caller(offset: int) -> None:
        n = offset
        while time.perf_counter() < stop:
            request = placer_pb2.InferRequest(
                model=types_pb2.ModelRef(name="small"),
                payload=images[n % len(images)],
                content_type="image/jpeg",
            )
            started = time.perf_counter()
            try:
                stub.Infer(request, timeout=30)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            with lock:
                codes[code] = codes.get(code, 0) + 1
                if code == "OK":
                    latencies.append(time.perf_counter() - started)
            n += 1

    elapsed = report.run_together(caller, CALLERS)
    ordered = sorted(latencies) or [0.0]
    return {
        "answered_rps": round(len(latencies) / elapsed, 1),
        "failed_rps": round(sum(n for c, n in codes.items() if c != "OK") / elapsed, 1),
        "codes": codes,
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "p99_ms": round(report.p99_of(ordered) * 1e3, 2),
    }


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def placer_and_flask(
    store: ModelStore, workdir: Path, arguments: Sequence[str] = ()
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """A placer and a Flask adapter (with its model server) heartbeating to it, tracing off;
    `arguments`: the adapter's own. Both stopped at the end."""
    placer = ServiceProcess(
        "straightline_placer",
        ["--listen", "127.0.0.1:0", "--metrics-listen", "off"],
        workdir / "placer",
        ENV,
    ).wait_ready()
    adapter = None
    try:
        adapter = ServiceProcess(
            "straightline_inference.adapter",
            [
                *("--platform", "flask", "--listen", "127.0.0.1:0", "--metrics-listen", "off"),
                *("--placer", placer.address, "--store", str(store.root), *arguments),
            ],
            workdir / "adapter",
            ENV,
        ).wait_ready(timeout=180)
        yield placer, adapter
    finally:
        if adapter is not None:
            adapter.terminate()
        placer.terminate()


def bench_setting(store: ModelStore, arguments: list[str], images, seconds, workdir) -> dict:
    with (
        placer_and_flask(store, workdir, arguments) as (placer, adapter),
        open_channel(placer.address, Role.CLIENT) as channel,
    ):
        stub = placer_pb2_grpc.PlacerServiceStub(channel)
        closed_loop(stub, images, 3.0)  # warm: every worker's first call
        [model_server] = children(adapter.process.pid)
        pids = {
            "placer": placer.process.pid,
            "adapter": adapter.process.pid,
            "model server": model_server,
            "callers": os.getpid(),
        }
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        run = closed_loop(stub, images, seconds)
        answered = max(1, run["codes"].get("OK", 0))
        run["cpu_ms_per_answer"] = {
            name: round((cpu_seconds(pid) - before[name]) / answered * 1e3, 3)
            for name, pid in pids.items()
        }
        return run


def markdown(results: dict) -> str:
    floor = results["in_process"]["one_at_a_time_rps"]
    lines = [
        "## Eight callers on one Flask adapter (issue 19: queue, do not refuse)",
        "",
        f"`python -m bench.callers_bench` on {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores): a placer and a Flask adapter (with its model "
        "server) serving the small test model; 8 closed-loop callers through the placer's "
        f"`Infer` for {results['seconds']:.0f} s per setting, tracing off. The floor is the "
        f"model in this process, one image at a time: {floor:.1f} images/s.",
        "",
        "| adapter | answered/s | share of in-process | failed/s (status: count) | p50 ms "
        "| p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for setting, run in results["settings"].items():
        failures = ", ".join(f"{c}: {n}" for c, n in run["codes"].items() if c != "OK")
        lines.append(
            f"| {setting} | {run['answered_rps']:.1f} | {run['answered_rps'] / floor:.2f} | "
            f"{run['failed_rps']:.1f} ({failures or 'none'}) | {run['p50_ms']:.1f} | "
            f"{run['p99_ms']:.1f} |"
        )
    processes = list(next(iter(results["settings"].values()))["cpu_ms_per_answer"])
    lines += [
        "",
        "The CPU budget: milliseconds of CPU (user + system, from /proc) each process spent per "
        "answered request in the same runs (failed requests cost CPU too, so the setting that "
        f"refuses looks dearer per answer). The model in-process: {1e3 / floor:.2f} ms per "
        "image.",
        "",
        f"| adapter | {' | '.join(processes)} | total |",
        f"| --- | {' | '.join('---' for _ in processes)} | --- |",
    ]
    for setting, run in results["settings"].items():
        costs = run["cpu_ms_per_answer"]
        lines.append(
            f"| {setting} | {' | '.join(f'{costs[p]:.2f}' for p in processes)} | "
            f"{sum(costs.values()):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    results: dict = {"machine": report.machine(), "seconds": args.seconds, "settings": {}}
    images = jpegs()
    with tempfile.TemporaryDirectory(prefix="straightline-callers-") as scratch:
        workdir = Path(scratch)
        store = ModelStore(workdir / "models")
        make_classifier(store, "small")
        for name, arguments in SETTINGS.items():
            run_dir = workdir / str(len(results["settings"]))
            results["settings"][name] = bench_setting(
                store, arguments, images, args.seconds, run_dir
            )
            print(name, results["settings"][name])
        results["in_process"] = in_process(store, "small", images, args.seconds)
    report.write("callers", results, markdown(results))


if __name__ == "__main__":
    main()

"""The latency a placer adds at one request in flight, placers side by side (issue 19).

One real Flask adapter with its model server (this tree's), serving the small test model, and
heartbeating to two or more placers at once: this tree's and, with `--other NAME=DIR`, one
started from another checkout of the repository (e.g. a worktree of commit 58f499f, the last
thread-pool placer, with its generated stubs). One caller, one request at a time: the
adapter's `Predict` called directly, then each placer's `Infer` (which forwards to that same
adapter), in alternation, `--rounds` times, the first calls of every path left out. What a
placer adds is its median minus the adapter's, both measured in the same round.

    python -m bench.placer_latency_ab [--requests 300] [--rounds 5] [--other NAME=DIR]
"""

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import report
from bench.batching_bench import jpegs
from bench.callers_bench import ENV
from bench.peers.__main__ import Call, infer, predict
from straightline.v1 import inference_pb2_grpc, placer_pb2_grpc
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import make_classifier

WARM_UP = 20
THIS_TREE = "this tree (grpc.aio)"
MODEL = "small"


def placer(workdir: Path, tree: Path | None) -> ServiceProcess:
    """A placer from this tree, or from the checkout at `tree` (its own code on the path)."""
    env = dict(ENV)
    if tree is not None:
        parts = ("", "libs/common", "services/placer", "services/inference", "services/devrunner")
        env["PYTHONPATH"] = ":".join(str(tree / part) for part in parts)
    return ServiceProcess(
        "straightline_placer", ["--listen", "127.0.0.1:0", "--metrics-listen", "off"], workdir, env
    ).wait_ready()


def timed(call: Call, images: list[bytes], requests: int) -> list[float]:
    """Seconds per call, one at a time, after WARM_UP calls left out."""
    for n in range(WARM_UP):
        call(images[n % len(images)])
    latencies = []
    for n in range(requests):
        started = time.perf_counter()
        call(images[n % len(images)])
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--other", action="append", default=[], help="NAME=DIR of a checkout")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {THIS_TREE: None}
    for other in args.other:
        name, _, directory = other.partition("=")
        trees[name] = Path(directory).resolve()
    images = jpegs()
    with tempfile.TemporaryDirectory(prefix="straightline-ab-") as scratch, ExitStack() as stack:
        store = ModelStore(Path(scratch) / "models")
        make_classifier(store, MODEL)
        placers = {}
        for n, (name, tree) in enumerate(trees.items()):
            placers[name] = placer(Path(scratch) / f"placer-{n}", tree)
            stack.callback(placers[name].terminate)
        adapter = ServiceProcess(
            "straightline_inference.adapter",
            [
                *("--platform", "flask", "--listen", "127.0.0.1:0", "--metrics-listen", "off"),
                *("--placer", ",".join(p.address for p in placers.values())),
                *("--store", str(store.root)),
            ],
            Path(scratch) / "adapter",
            ENV,
        ).wait_ready(timeout=180)
        stack.callback(adapter.terminate)
        adapter_stub = inference_pb2_grpc.InferenceServiceStub(
            stack.enter_context(open_channel(adapter.address, Role.PLACER))
        )
        paths = {"adapter (Predict)": predict(adapter_stub, MODEL)}
        for name, process in placers.items():
            channel = stack.enter_context(open_channel(process.address, Role.CLIENT))
            paths[name] = infer(placer_pb2_grpc.PlacerServiceStub(channel), MODEL)
        rounds = []
        for _ in range(args.rounds):
            measured = {name: timed(call, images, args.requests) for name, call in paths.items()}
            rounds.append({name: report.summary(samples) for name, samples in measured.items()})
            print(rounds[-1], flush=True)
    results = {"machine": report.machine(), "requests": args.requests, "rounds": rounds}
    report.write("placer_latency_ab", results, markdown(results, list(trees)))


def markdown(results: dict, placers: list[str]) -> str:
    rounds = results["rounds"]
    lines = [
        "## The latency a placer adds at one request in flight: grpc.aio against the thread "
        "pool (issue 19)",
        "",
        f"`python -m bench.placer_latency_ab --other 'thread pool (58f499f)=DIR'` on "
        f"{results['machine']['cpu']} ({results['machine']['cores']} cores): the small test "
        f"model on one Flask adapter heartbeating to both placers; one caller, "
        f"{results['requests']} requests per path and round, {len(rounds)} rounds in "
        "alternation. Added by the placer: its median minus the adapter's in the same round.",
        "",
        "| path | median ms per round | p99 ms (median of rounds) | added by the placer, ms "
        "(median of rounds; range) |",
        "| --- | --- | --- | --- |",
    ]
    for name in ["adapter (Predict)", *placers]:
        medians = [r[name]["median_us"] / 1e3 for r in rounds]
        added = [(r[name]["median_us"] - r["adapter (Predict)"]["median_us"]) / 1e3 for r in rounds]
        p99 = statistics.median(r[name]["p99_us"] for r in rounds) / 1e3
        added_text = (
            "-"
            if name == "adapter (Predict)"
            else f"{statistics.median(added):.2f} ({min(added):.2f}-{max(added):.2f})"
        )
        lines.append(
            f"| {name} | {', '.join(f'{m:.2f}' for m in medians)} | {p99:.2f} | {added_text} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

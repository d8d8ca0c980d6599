"""Adaptive batching in the model server (issue 19), side by side with its floor.

For the small test model and for Keras Xception (299 px): the model server as a real process
(waitress, 8 worker threads) with batching off (`--max-batch-size 1`) and on (the defaults),
in alternation, under a closed loop of 1 and 8 callers posting JPEGs; next to the model
in-process, one image at a time and in batches of 8 (the rate batching can reach at best).
The first call of every model is left out of every figure.

    python -m bench.batching_bench [--seconds 15] [--rounds 2]
"""

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import urllib3

from bench import report
from bench.inference_bench import make_xception
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import image_bytes, make_classifier

SETTINGS = {"off": ["--max-batch-size", "1"], "on": []}
CALLERS = (1, 8)


def jpegs() -> list[bytes]:
    """Eight JPEGs of 320x240, each of its own colour."""
    return [image_bytes(colour=(30 * i % 256, 200 - 20 * i, 90), size=(320, 240)) for i in range(8)]


def closed_loop(url: str, images: list[bytes], callers: int, seconds: float) -> dict:
    """`callers` threads posting one image after another for `seconds`."""
    pool = urllib3.PoolManager(maxsize=callers)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def caller(offset: int) -> None:
        n = offset
        while time.perf_counter() < stop:
            started = time.perf_counter()
            reply = pool.request(
                "POST", url, body=images[n % len(images)], headers={"Content-Type": "image/jpeg"}
            )
            assert reply.status == 200, reply.data[:200]
            with lock:
                latencies.append(time.perf_counter() - started)
            n += 1

    elapsed = report.run_together(caller, callers)
    ordered = sorted(latencies)
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1e3, 2),
        "p99_ms": round(report.p99_of(ordered) * 1e3, 2),
    }


def in_process(store: ModelStore, model: str, images: list[bytes], seconds: float) -> dict:
    """The model in this process: images per second one at a time (decode included) and in
    batches of 8 (decoded beforehand: the model alone)."""
    import numpy as np

    from straightline_inference import imaging
    from straightline_inference.batching import BatchSettings
    from straightline_inference.model import LoadedModel

    loaded = LoadedModel(store.resolve(model), BatchSettings(max_batch_size=1))
    loaded.predict(images[0], "image/jpeg")  # the first call, left out
    count, stop = 0, time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < stop:
        loaded.predict(images[count % len(images)], "image/jpeg")
        count += 1
    single = count / (time.perf_counter() - began)
    pixels = np.stack([imaging.decode(i, "image/jpeg", loaded.input_size) for i in images[:8]])
    forward = loaded._forward  # the graph the server runs
    forward(pixels)
    batches, stop = 0, time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < stop:
        forward(pixels).numpy()
        batches += 1
    batched = batches * 8 / (time.perf_counter() - began)
    return {"one_at_a_time_rps": round(single, 1), "batches_of_8_rps": round(batched, 1)}


def served(store: ModelStore, model: str, setting: str, workdir: Path) -> ServiceProcess:
    process = ServiceProcess(
        "straightline_inference.modelserver",
        [
            *("--store", str(store.root), "--model", model),
            *("--listen", "127.0.0.1:0", "--threads", "8"),
            *SETTINGS[setting],
        ],
        workdir / f"{model}-{setting}",
    )
    return process.wait_ready(timeout=180)


def bench_model(store: ModelStore, model: str, args, workdir: Path) -> dict:
    images = jpegs()
    runs: dict[str, dict[int, list[dict]]] = {s: {c: [] for c in CALLERS} for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:  # alternating: off, on, off, on
            process = served(store, model, setting, workdir)
            try:
                url = f"http://127.0.0.1:{process.ports['http']}/v1/models/{model}/predict"
                closed_loop(url, images, 8, 2.0)  # warm: every worker's first call
                for callers in CALLERS:
                    runs[setting][callers].append(closed_loop(url, images, callers, args.seconds))
            finally:
                process.terminate()
    floor = in_process(store, model, images, args.seconds)
    return {"in_process": floor, "served": runs}


def _median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def markdown(results: dict) -> str:
    lines = [
        "## Adaptive batching in the model server (issue 19)",
        "",
        f"`python -m bench.batching_bench` on {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores): the model server (waitress, 8 threads) with "
        "batching off (`--max-batch-size 1`) and on (the defaults: at most 8 images, 2 ms "
        "queue delay), in alternation, closed loop over HTTP with JPEGs of 320x240; medians "
        f"of {results['rounds']} rounds of {results['seconds']:.0f} s. The floor is the model "
        "in this process: one image at a time (decode included) and batches of 8 (the model "
        "alone).",
        "",
        "| model | callers | batching | requests/s | share of in-process batched | p50 ms "
        "| p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, outcome in results["models"].items():
        ceiling = outcome["in_process"]["batches_of_8_rps"]
        for callers in CALLERS:
            for setting in SETTINGS:
                runs = outcome["served"][setting][str(callers)]
                rps = _median(runs, "rps")
                lines.append(
                    f"| {model} | {callers} | {setting} | {rps:.1f} | {rps / ceiling:.2f} | "
                    f"{_median(runs, 'p50_ms'):.1f} | {_median(runs, 'p99_ms'):.1f} |"
                )
        floor = outcome["in_process"]
        lines.append(
            f"| {model} | in process | one at a time / batches of 8 | "
            f"{floor['one_at_a_time_rps']:.1f} / {ceiling:.1f} | | | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", default="small,xception")
    args = parser.parse_args()
    results: dict = {"machine": report.machine(), "seconds": args.seconds, "rounds": args.rounds}
    results["models"] = {}
    with tempfile.TemporaryDirectory(prefix="straightline-batching-") as scratch:
        workdir = Path(scratch)
        store = ModelStore(workdir / "models")
        for model in args.models.split(","):
            if model == "xception":
                make_xception(store)
            else:
                make_classifier(store, model)
            outcome = bench_model(store, model, args, workdir)
            outcome["served"] = {
                setting: {str(c): runs for c, runs in by_callers.items()}
                for setting, by_callers in outcome["served"].items()
            }
            results["models"][model] = outcome
            print(model, outcome)
    report.write("batching", results, markdown(results))


if __name__ == "__main__":
    main()

"""Inference benchmark: per platform, warm latency and cold start, with the small test model
and with Keras Xception (weights=None, 4 classes, 299x299); and the latency the adapter and
the placer add on top of calling the model server directly.

Run from the repository root with a Docker engine and the images: `make bench-inference`
(or `python -m bench.inference_bench`). Target (issue 3): adapter plus placer add under 2 ms
median to a warm request.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import urllib3
from google.protobuf import field_mask_pb2

from bench import report
from straightline.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    placer_pb2,
    placer_pb2_grpc,
    types_pb2,
)
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import image_bytes, make_classifier

PLATFORMS = {
    "flask": types_pb2.PLATFORM_FLASK,
    "docker": types_pb2.PLATFORM_DOCKER,
    "serverless": types_pb2.PLATFORM_SERVERLESS,
}


def make_xception(store: ModelStore) -> None:
    import tensorflow as tf

    model = tf.keras.Sequential(
        [
            tf.keras.Input((299, 299, 3)),
            tf.keras.layers.Rescaling(1 / 127.5, offset=-1),
            tf.keras.applications.Xception(weights=None, classes=4, input_shape=(299, 299, 3)),
        ]
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.h5"
        model.save(path)
        store.add(
            "xception",
            path,
            {
                "class_names": ["cat", "chook", "dog", "horse"],
                "input_size": [299, 299],
                "format": "keras-h5",
            },
        )


def summary_ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1e3, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1e3, 2),
    }


class Stack:
    """Model server, placer and three adapters as processes; stopped by close()."""

    def __init__(self, workdir: Path, store: ModelStore):
        self.processes = []
        started = time.perf_counter()
        self.server = self._start(
            "straightline_inference.modelserver",
            ["--store", str(store.root), "--listen", "127.0.0.1:0", "--threads", "2"],
            workdir / "server",
        )
        self.model_server_cold_start_s = time.perf_counter() - started
        self.placer = self._start(
            "straightline_placer",
            ["--listen", "127.0.0.1:0", "--metrics-listen", "off"],
            workdir / "placer",
        )
        url = f"http://127.0.0.1:{self.server.ports['http']}"
        common = [
            "--listen",
            "127.0.0.1:0",
            "--placer",
            self.placer.address,
            "--store",
            str(store.root),
        ]
        self.adapters = {
            "flask": self._start(
                "straightline_inference.adapter",
                ["--platform", "flask", "--model-server-url", url, "--threads", "2", *common],
                workdir / "flask",
            ),
            "docker": self._start(
                "straightline_inference.adapter",
                [
                    "--platform",
                    "docker",
                    "--max-containers",
                    "1",
                    "--threads-per-container",
                    "2",
                    *common,
                ],
                workdir / "docker",
            ),
            "serverless": self._start(
                "straightline_inference.adapter",
                ["--platform", "serverless", "--concurrency", "1", *common],
                workdir / "serverless",
            ),
        }
        self.placer_channel = open_channel(self.placer.address, Role.OPERATOR)
        self.placer_stub = placer_pb2_grpc.PlacerServiceStub(self.placer_channel)
        self.http = urllib3.PoolManager()
        self.url = url

    def _start(self, module, args, workdir):
        process = ServiceProcess(module, args, workdir, {"OTEL_SDK_DISABLED": "true"})
        self.processes.append(process)
        return process.wait_ready(timeout=300)

    def adapter_stub(self, platform: str):
        channel = open_channel(self.adapters[platform].address, Role.OPERATOR)
        return inference_pb2_grpc.InferenceServiceStub(channel)

    def pin(self, platform: int) -> None:
        self.placer_stub.UpdatePolicy(
            placer_pb2.UpdatePolicyRequest(
                policy=placer_pb2.Policy(pinned_platform=platform),
                update_mask=field_mask_pb2.FieldMask(paths=["pinned_platform"]),
            )
        )

    def close(self) -> None:
        self.placer_channel.close()
        for process in reversed(self.processes):
            process.terminate(timeout=60)


def time_one(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_model(
    stack: Stack, model: str, n: int, platforms=tuple(PLATFORMS), idle_s: float = 0.0
) -> dict:
    """Each platform's figures; with `idle_s`, every call comes after that long idle, as the
    calls around an inference that long do."""
    image = image_bytes((120, 80, 200), size=(300, 225))
    ref = types_pb2.ModelRef(name=model)
    predict = inference_pb2.PredictRequest(model=ref, payload=image, content_type="image/jpeg")
    infer = placer_pb2.InferRequest(model=ref, payload=image, content_type="image/jpeg")
    results = {}
    for name in platforms:
        platform = PLATFORMS[name]
        stub = stack.adapter_stub(name)
        first = stub.Predict(predict, timeout=300)
        stack.pin(platform)
        calls = {
            "adapter": lambda stub=stub: stub.Predict(predict, timeout=60),
            "placer": lambda: stack.placer_stub.Infer(infer, timeout=60),
        }
        if name == "flask":
            calls["direct"] = lambda: stack.http.request(
                "POST",
                f"{stack.url}/v1/models/{model}/predict",
                body=image,
                headers={"Content-Type": "image/jpeg"},
            )
        for call in calls.values():  # warm-up
            for _ in range(5):
                call()
        samples = {key: [] for key in calls}
        for _ in range(n):
            for key, call in calls.items():  # in alternation: the same machine for each
                if idle_s:
                    time.sleep(idle_s)
                samples[key].append(time_one(call))
        results[name] = {
            "first_request_cold_start_ms": round(first.timings.cold_start.ToNanoseconds() / 1e6, 1),
            **{key: summary_ms(value) for key, value in samples.items()},
        }
    results["overhead_ms"] = overhead_ms(results["flask"])
    return results


def overhead_ms(flask: dict) -> dict:
    """Medians added on top of calling the Flask model server directly."""
    direct = flask["direct"]["median_ms"]
    return {
        "adapter": round(flask["adapter"]["median_ms"] - direct, 2),
        "adapter_and_placer": round(flask["placer"]["median_ms"] - direct, 2),
    }


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "## Inference platforms (issue 3)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU; Python {m['python']}. "
        f"Command: `make bench-inference`. {results['date']}. One request at a time; each "
        "figure alternates with the others so that all see the same machine; the first "
        "TensorFlow call of every process is out of the figures (warm-up).",
        "",
        "| model | platform | cold start | direct median / p95 | via adapter median / p95 "
        "| via placer median / p95 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for model in ("tiny", "xception"):
        data = results[model]
        for platform in PLATFORMS:
            row = data[platform]
            cold = (
                f"{results['model_server_cold_start_s'][model]:.1f} s (model server start)"
                if platform == "flask"
                else f"{row['first_request_cold_start_ms'] / 1e3:.1f} s"
            )
            direct = row.get("direct")
            lines.append(
                f"| {model} | {platform} | {cold} | "
                + (f"{direct['median_ms']} / {direct['p95_ms']} ms" if direct else "-")
                + f" | {row['adapter']['median_ms']} / {row['adapter']['p95_ms']} ms"
                f" | {row['placer']['median_ms']} / {row['placer']['p95_ms']} ms |"
            )
    idle = results["tiny_idle"]
    added = {
        "tiny": results["tiny"]["overhead_ms"],
        "xception": results["xception"]["overhead_ms"],
        f"tiny, each call after {idle['idle_ms']} ms idle": idle["overhead_ms"],
    }
    lines += ["", "Latency added on top of calling the Flask model server directly (medians):", ""]
    for label, o in added.items():
        verdict = "met" if o["adapter_and_placer"] < 2 else "not met"
        lines.append(
            f"- {label}: adapter {o['adapter']} ms; adapter and placer "
            f"{o['adapter_and_placer']} ms (target under 2 ms: {verdict})."
        )
    direct = results["tiny"]["flask"]["direct"]["median_ms"]
    lines += [
        "",
        "Reading: each of the two extra hops is a Python gRPC call on loopback. Back to back, "
        "as with the tiny model, every process stays awake; with Xception the adapter and the "
        "placer sit idle through each inference and pay for waking up afterwards. The last "
        "line isolates that: the tiny model again, with the same idle time before each call "
        f"as one Xception inference (the direct call itself goes from {direct} to "
        f"{idle['flask']['direct']['median_ms']} ms).",
        "",
        "Cold start: Flask, from starting the model-server process to its first "
        "answer being possible (TensorFlow import, load, warm-up); Docker, a new "
        "model-server container to ready, as the first request paid it; serverless, a new "
        "emulator environment through its init phase, as the first request paid it.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--xception-requests", type=int, default=30)
    args = parser.parse_args()
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": report.machine(),
        "model_server_cold_start_s": {},
    }
    # Xception first: its inference time is the idle gap of the tiny model's last pass.
    for model, n in (("xception", args.xception_requests), ("tiny", args.requests)):
        with tempfile.TemporaryDirectory() as workdir:
            store = ModelStore(Path(workdir) / "models")
            make_classifier(store, "tiny") if model == "tiny" else make_xception(store)
            stack = Stack(Path(workdir), store)
            try:
                results["model_server_cold_start_s"][model] = round(
                    stack.model_server_cold_start_s, 2
                )
                results[model] = bench_model(stack, model, n)
                if model == "tiny":
                    idle_s = results["xception"]["flask"]["direct"]["median_ms"] / 1e3
                    results["tiny_idle"] = {
                        "idle_ms": round(idle_s * 1e3, 1),
                        **bench_model(stack, model, n, platforms=("flask",), idle_s=idle_s),
                    }
            finally:
                stack.close()
    report.write("inference", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

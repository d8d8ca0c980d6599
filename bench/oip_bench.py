"""The Open Inference Protocol's cost on the placer: `ModelInfer` against `Infer` on the same
image, in one run, through a real placer process to simulated adapters that answer at once
(so the time is the placer's and the hops', not a model's), tracing off.

- single image: the two RPCs timed in alternation, median and p99, and the ratio of the
  placer's part (each minus a bare gRPC echo served the same way);
- a batch of 8 images in one `ModelInfer` against 8 `Infer` calls, one after another and 8 at
  once: time per image.

Run from the repository root: `python -m bench.oip_bench`. Targets (issue 18): the OIP path
adds at most 10% to the placer's part of the latency; a batch of 8 costs no more per image than
8 single requests.
"""

import argparse
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import report
from bench.placer_bench import time_alternately
from inference import open_inference_grpc_pb2 as oip
from inference import open_inference_grpc_pb2_grpc as oip_grpc
from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.processes import ServiceProcess
from straightline_inference.simulated import SimulatedAdapter

IMAGE = b"\xff\xd8\xff\xe0" + b"x" * 5_000  # a JPEG's first bytes; the simulation does not decode
BATCH = 8


def run_adapter(placer_address: str, stop) -> None:
    """In a process of its own, so that it does not compete with the timed client."""
    adapter = SimulatedAdapter(
        types_pb2.PLATFORM_SERVERLESS, placer_address, capacity=64, service_time_s=0.0
    ).start()
    stop.wait()
    adapter.stop()


def model_infer_request(images: int) -> oip.ModelInferRequest:
    tensor = oip.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[images])
    tensor.contents.bytes_contents.extend([IMAGE] * images)
    return oip.ModelInferRequest(model_name="demo", inputs=[tensor])


def bench(workdir: Path, n: int) -> dict:
    env = {"OTEL_SDK_DISABLED": "true"}
    placer = ServiceProcess(
        "straightline_placer",
        ["--listen", "127.0.0.1:0", "--metrics-listen", "off", "--frequency-threshold-rps", "1e9"],
        workdir,
        env,
    ).wait_ready()
    echo = ServiceProcess("bench.echo_server", [], workdir, env).wait_ready()
    stop = multiprocessing.Event()
    adapter = multiprocessing.Process(target=run_adapter, args=(placer.address, stop))
    adapter.start()
    try:
        with (
            open_channel(placer.address, Role.CLIENT) as channel,
            open_channel(echo.address, Role.CLIENT) as echo_channel,
        ):
            placer_stub = placer_pb2_grpc.PlacerServiceStub(channel)
            oip_stub = oip_grpc.GRPCInferenceServiceStub(channel)
            _wait_ready(oip_stub)
            infer_request = placer_pb2.InferRequest(
                model=types_pb2.ModelRef(name="demo"), payload=IMAGE, content_type="image/jpeg"
            )
            single, batch = model_infer_request(1), model_infer_request(BATCH)
            echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
            echo_payload = single.SerializeToString()
            infer, model_infer = time_alternately(
                lambda: placer_stub.Infer(infer_request, timeout=10),
                lambda: oip_stub.ModelInfer(single, timeout=10),
                n,
                200,
            )
            bare = [_timed(lambda: echo_call(echo_payload)) for _ in range(n)]
            batched = [
                _timed(lambda: oip_stub.ModelInfer(batch, timeout=10)) for _ in range(n // 8)
            ]
            one_by_one = [
                _timed(lambda: [placer_stub.Infer(infer_request, timeout=10) for _ in range(BATCH)])
                for _ in range(n // 8)
            ]
            with ThreadPoolExecutor(BATCH) as pool:
                at_once = [
                    _timed(
                        lambda: list(
                            pool.map(
                                lambda _: placer_stub.Infer(infer_request, timeout=10),
                                range(BATCH),
                            )
                        )
                    )
                    for _ in range(n // 8)
                ]
    finally:
        stop.set()
        adapter.join()
        for process in (placer, echo):
            process.terminate()
    infer_s, oip_s, echo_s = (report.summary(x) for x in (infer, model_infer, bare))
    per_image = {
        name: report.summary([t / BATCH for t in samples])
        for name, samples in (
            ("model_infer_batch_of_8", batched),
            ("infer_8_one_after_another", one_by_one),
            ("infer_8_at_once", at_once),
        )
    }
    placer_part = {
        "infer_us": round(infer_s["median_us"] - echo_s["median_us"], 1),
        "model_infer_us": round(oip_s["median_us"] - echo_s["median_us"], 1),
    }
    placer_part["oip_added"] = round(placer_part["model_infer_us"] / placer_part["infer_us"] - 1, 3)
    return {
        "infer": infer_s,
        "model_infer": oip_s,
        "echo": echo_s,
        "placer_part_median": placer_part,
        "per_image": per_image,
    }


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _wait_ready(stub, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not stub.ModelReady(oip.ModelReadyRequest(name="demo")).ready:
        if time.monotonic() > deadline:
            raise RuntimeError("the simulated adapter did not register")
        time.sleep(0.05)


def markdown(results: dict) -> str:
    part, per_image = results["placer_part_median"], results["per_image"]
    rows = "\n".join(
        f"| {name.replace('_', ' ')} | {s['median_us']:.0f} | {s['p99_us']:.0f} |"
        for name, s in per_image.items()
    )
    machine = results["machine"]
    table = "\n".join(
        f"| {label} | {results[key]['median_us']:.0f} | {results[key]['p99_us']:.0f} |"
        for label, key in (
            ("`Infer`, one image", "infer"),
            ("`ModelInfer`, one image", "model_infer"),
            ("bare gRPC echo (the floor)", "echo"),
        )
    )
    return f"""## Open Inference Protocol on the placer (`python -m bench.oip_bench`)

{results["date"]}, {machine["cpu"]}, {machine["cores"]} cores; `{results["command"]}`.
A real placer process, one simulated adapter answering at once, tracing off.

| call | median us | p99 us |
| --- | --- | --- |
{table}

The placer's part (median minus the echo): `Infer` {part["infer_us"]:.0f} us, `ModelInfer`
{part["model_infer_us"]:.0f} us: the OIP path adds {part["oip_added"]:.1%} (target: at most 10%).

Per image, a batch of {BATCH}:

| how | median us per image | p99 us per image |
| --- | --- | --- |
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpcs", type=int, default=2_000)
    args = parser.parse_args()
    results = {"date": time.strftime("%Y-%m-%d"), "machine": report.machine()}
    results["command"] = " ".join(["python -m bench.oip_bench", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as workdir:
        results.update(bench(Path(workdir), args.rpcs))
    report.write("oip", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

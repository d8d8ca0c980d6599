"""StraightLine and its peers on the same model and images, closed loop, side by side.

The small test model and eight 320x240 JPEGs; 8 closed-loop callers for a while against each
way of serving it, in alternation and repeated, reported as shares of the model in this process
(one image at a time, decode included, the first call left out):

- StraightLine: the model server called directly (REST v1), an adapter's `Predict` (what the
  placer sends), and the placer's `Infer` (placement included) over a Flask adapter with the
  defaults;
- MLServer (its own virtual environment, `make setup`), serving the same Keras file through
  the custom runtime the tests use, over its OIP REST API (JSON, the image base64) and its OIP
  gRPC API (raw bytes);
- Ray Serve (HTTP, the JPEG as the body), one and two replicas, behind its default proxy and
  in its high-throughput mode (HAProxy in front), and BentoML (its JSON API, the image base64,
  two workers), each installed by this script into a virtual environment of its own
  (`bench/peers/venvs.py`: Ray 2.60.0, BentoML 1.4.40 here), loading the model with our code.
  Each peer is stopped through its own server first (Ray Serve's driver shuts its cluster and
  HAProxy down), then its process group, then anything left that names its directory.

    python -m bench.peers [--seconds 10] [--rounds 3] [--peers mlserver,ray,bentoml]
"""

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import grpc
import urllib3

from bench import report
from bench.batching_bench import in_process, jpegs
from bench.callers_bench import ENV, placer_and_flask
from bench.peers import venvs
from inference import open_inference_grpc_pb2 as oip
from inference import open_inference_grpc_pb2_grpc as oip_grpc
from straightline.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    placer_pb2,
    placer_pb2_grpc,
    types_pb2,
)
from straightline_common import oip_tensors
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from straightline_inference.adapter.containers import free_ports
from tests.support.mlserver import running_mlserver
from tests.support.models import make_classifier

CALLERS = 8
MODEL = "small"
Call = Callable[[bytes], None]  # one request for one image; raises when it is not answered


def closed_loop(call: Call, images: list[bytes], seconds: float) -> dict:
    """Answered requests per second, their median latency, and the failures by kind."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def caller(offset: int) -> None:
        n = offset
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                call(images[n % len(images)])
            except Exception as error:  # counted, not fatal: a failure is a result here
                kind = (
                    error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__
                )
                with lock:
                    failures[kind] = failures.get(kind, 0) + 1
            else:
                with lock:
                    latencies.append(time.perf_counter() - started)
            n += 1

    elapsed = report.run_together(caller, CALLERS)
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies or [0.0]) * 1e3, 2),
        "failures": failures,
    }


def rest_v1(url: str) -> Call:
    pool = urllib3.PoolManager(maxsize=CALLERS, retries=False)  # a failure counts

    def call(image: bytes) -> None:
        reply = pool.request("POST", url, body=image, headers={"Content-Type": "image/jpeg"})
        assert reply.status == 200, reply.data[:200]

    return call


def oip_rest(url: str) -> Call:
    """An OIP infer over REST in plain JSON (MLServer has no binary extension): the image
    base64, the top class asked for with the classification parameter."""
    pool = urllib3.PoolManager(maxsize=CALLERS, retries=False)  # a failure counts

    def call(image: bytes) -> None:
        body = {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(image).decode()],
                    "parameters": {"content_type": "base64"},
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"classification": 1}}],
        }
        reply = pool.request(
            "POST",
            f"{url}/v2/models/{MODEL}/infer",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert reply.status == 200, reply.data[:200]

    return call


def json_b64(url: str) -> Call:
    """BentoML's JSON API: the image base64 under its parameter's name."""
    pool = urllib3.PoolManager(maxsize=CALLERS, retries=False)  # a failure counts

    def call(image: bytes) -> None:
        body = json.dumps({"image_b64": base64.b64encode(image).decode()})
        reply = pool.request("POST", url, body=body, headers={"Content-Type": "application/json"})
        assert reply.status == 200, reply.data[:200]

    return call


@contextmanager
def peer_process(command: list[str], env: dict[str, str], log: Path, probe: Call) -> Iterator[None]:
    """A peer's server started from its own environment, ready once `probe` answers; stopped
    at the end (`_stop_peer`)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=venvs.ROOT, env=env, stdout=output, stderr=output, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                assert process.poll() is None, log.read_text()[-3000:]
                try:
                    probe(jpegs()[0])
                    break
                except Exception:  # not ready yet: refused, 404, 503
                    assert time.monotonic() < deadline, "the peer was not ready in 300 s"
                    time.sleep(1.0)
            yield
        finally:
            _stop_peer(process, log.parent)


def _stop_peer(process: subprocess.Popen, workdir: Path) -> None:
    """The server first, alone, so that it can stop what it started (Ray Serve's driver shuts
    its cluster down, and with it HAProxy, which runs outside the process group); then what is
    left of its process group; then anything still running that names the run's directory
    (such a HAProxy, when the graceful stop failed)."""
    process.terminate()
    with suppress(subprocess.TimeoutExpired):
        process.wait(90)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for pid in _processes_naming(workdir):
        os.kill(pid, signal.SIGKILL)


def _processes_naming(directory: Path) -> list[int]:
    """Processes of this user whose command line names `directory`."""
    mine, needle = os.getuid(), str(directory).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid == mine and needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # it ended meanwhile
            continue
    return found


def ray_serve_calls(store: ModelStore, measure) -> None:
    """Ray Serve, one and two replicas, default proxy and high-throughput mode."""
    python = str(venvs.ensure("ray") / "bin" / "python")
    for fast in (False, True):
        mode = "high-throughput mode, HAProxy" if fast else "default proxy"
        for replicas in (1, 2):
            [port, stats_port, metrics_port] = free_ports(3)
            call = rest_v1(f"http://127.0.0.1:{port}/classify")
            command = [
                python,
                "bench/peers/ray_serve_app.py",
                *("--store", str(store.root), "--model", MODEL, "--port", str(port)),
                *("--replicas", str(replicas)),
            ]
            # HAProxy's files in a directory of this run (short: its socket's path, with the
            # hash Ray adds, must stay under 97 characters) and its ports free ones, not /tmp
            # and fixed ports that a previous run's HAProxy could still hold.
            with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as short:
                haproxy = Path(short)
                flags = {
                    "RAY_SERVE_ENABLE_HA_PROXY": "1",
                    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(haproxy / "haproxy.cfg"),
                    "RAY_SERVE_HAPROXY_SOCKET_PATH": str(haproxy / "admin.sock"),
                    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(haproxy),
                    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(haproxy / "server-state"),
                    "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
                    "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
                }
                env = venvs.environment(flags if fast else {})
                with peer_process(command, env, haproxy / "ray.log", call):
                    measure(f"Ray Serve (HTTP, {mode}, {replicas} replica(s))", call)


def bentoml_calls(store: ModelStore, workdir: Path, measure) -> None:
    [port] = free_ports(1)
    call = json_b64(f"http://127.0.0.1:{port}/classify")
    command = [
        str(venvs.ensure("bentoml") / "bin" / "bentoml"),
        *("serve", "bench.peers.bentoml_service:Classifier"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    env = venvs.environment(
        {"PEER_STORE": str(store.root), "PEER_MODEL": MODEL, "PEER_WORKERS": "2"}
    )
    with peer_process(command, env, workdir / "bentoml.log", call):
        measure("BentoML (JSON, 2 workers)", call)


def oip_grpc_call(target: str) -> tuple[Call, grpc.Channel]:
    channel = grpc.insecure_channel(target)
    stub = oip_grpc.GRPCInferenceServiceStub(channel)

    def call(image: bytes) -> None:
        tensor = oip.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])
        wanted = oip.ModelInferRequest.InferRequestedOutputTensor(name="scores")
        wanted.parameters["classification"].int64_param = 1
        request = oip.ModelInferRequest(
            model_name=MODEL,
            inputs=[tensor],
            outputs=[wanted],
            raw_input_contents=[oip_tensors.with_length(image)],
        )
        stub.ModelInfer(request, timeout=30)

    return call, channel


def adapter_predict(stub: inference_pb2_grpc.InferenceServiceStub) -> Call:
    """An adapter's Predict, as the placer sends it."""
    ref = types_pb2.ModelRef(name=MODEL)

    def call(image: bytes) -> None:
        request = inference_pb2.PredictRequest(model=ref, payload=image, content_type="image/jpeg")
        stub.Predict(request, timeout=30)

    return call


def straightline_calls(store: ModelStore, workdir: Path, measure) -> None:
    """An adapter's Predict, the placer's Infer."""
    with (
        placer_and_flask(store, workdir) as (placer, adapter),
        open_channel(adapter.address, Role.PLACER) as to_adapter,
        open_channel(placer.address, Role.CLIENT) as to_placer,
    ):
        adapter_stub = inference_pb2_grpc.InferenceServiceStub(to_adapter)
        placer_stub = placer_pb2_grpc.PlacerServiceStub(to_placer)
        ref = types_pb2.ModelRef(name=MODEL)

        def infer(image: bytes) -> None:
            request = placer_pb2.InferRequest(model=ref, payload=image, content_type="image/jpeg")
            placer_stub.Infer(request, timeout=30)

        measure("StraightLine adapter (gRPC Predict)", adapter_predict(adapter_stub))
        measure("StraightLine placer (gRPC Infer)", infer)


def mlserver_calls(store: ModelStore, workdir: Path, measure) -> None:
    with running_mlserver(store.root, MODEL, workdir) as urls:
        measure("MLServer (OIP REST, JSON)", oip_rest(urls["rest"]))
        call, channel = oip_grpc_call(urls["grpc"].removeprefix("grpc://"))
        with channel:
            measure("MLServer (OIP gRPC)", call)


def model_server_calls(store: ModelStore, workdir: Path, measure) -> None:
    """The model server alone, with the Flask adapter's default of 4 worker threads."""
    server = ServiceProcess(
        "straightline_inference.modelserver",
        ["--store", str(store.root), "--listen", "127.0.0.1:0", "--threads", "4"],
        workdir / "model-server",
        ENV,
    ).wait_ready(timeout=180)
    try:
        url = f"http://127.0.0.1:{server.ports['http']}/v1/models/{MODEL}/predict"
        measure("StraightLine model server (REST v1)", rest_v1(url))
    finally:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--peers",
        default="mlserver,ray,bentoml",
        help="which peers beside StraightLine, comma-separated (mlserver, ray, bentoml)",
    )
    args = parser.parse_args()
    peers = set(args.peers.split(","))
    images = jpegs()
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="straightline-peers-") as scratch:
        workdir = Path(scratch)
        store = ModelStore(workdir / "models")
        make_classifier(store, MODEL)

        def measure(name: str, call: Call) -> None:
            closed_loop(call, images, 2.0)  # warm: every worker's first call
            runs.setdefault(name, []).append(closed_loop(call, images, args.seconds))
            print(name, runs[name][-1])

        for round_ in range(args.rounds):
            model_server_calls(store, workdir / f"model-server-{round_}", measure)
            straightline_calls(store, workdir / f"straightline-{round_}", measure)
            if "mlserver" in peers:
                mlserver_calls(store, workdir / f"mlserver-{round_}", measure)
            if "ray" in peers:
                ray_serve_calls(store, measure)
            if "bentoml" in peers:
                bentoml_calls(store, workdir / f"bentoml-{round_}", measure)
        floor = in_process(store, MODEL, images, args.seconds)
    results = {
        "machine": report.machine(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "in_process": floor,
        "runs": runs,
    }
    report.write("peers", results, markdown(results))


def markdown(results: dict) -> str:
    floor = results["in_process"]["one_at_a_time_rps"]
    lines = [
        "## StraightLine and its peers, side by side (issue 19)",
        "",
        f"`python -m bench.peers` on {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores): the small test model and eight 320x240 JPEGs, "
        f"{CALLERS} closed-loop callers, {results['seconds']:.0f} s per server and round, "
        f"{results['rounds']} rounds in alternation, tracing off; medians of the rounds, and "
        f"their range. The floor: the model in this process, one image at a time, "
        f"{floor:.1f} images/s.",
        "",
        "| server | answered/s | share of in-process (range) | p50 ms | failed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, runs in results["runs"].items():
        rates = [r["rps"] for r in runs]
        lines.append(
            f"| {name} | {statistics.median(rates):.1f} | "
            f"{statistics.median(rates) / floor:.2f} ({min(rates) / floor:.2f}-"
            f"{max(rates) / floor:.2f}) | {statistics.median(r['p50_ms'] for r in runs):.1f} | "
            f"{failed(runs)} |"
        )
    return "\n".join(lines)


def failed(runs: list[dict]) -> str:
    """The failures of every round, by kind."""
    total: dict[str, int] = {}
    for run in runs:
        for kind, count in run["failures"].items():
            total[kind] = total.get(kind, 0) + count
    return ", ".join(f"{kind}: {count}" for kind, count in total.items()) or "none"


if __name__ == "__main__":
    main()

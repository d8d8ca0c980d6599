"""StraightLine and its peers on the same model and images, closed loop, side by side.

The small test model (or Keras Xception, `--model xception`) and eight 320x240 JPEGs; against
each way of serving it, in alternation and repeated: 8 closed-loop callers for a while, then an
open loop (Poisson arrivals at a share of the in-process rate, latency counted from when each
request was due, so a server that falls behind pays for its backlog). Reported as shares of the
model in this process (one image at a time, decode included, the first call left out; and in
batches of 8, the model alone):

- StraightLine: the model server called directly (REST v1; and as one process per core, the
  client taking them in turn), an adapter's `Predict` (what the
  placer sends), and the placer's `Infer` (placement included) over a Flask adapter with the
  defaults, and again with its model server as one process per core
  (`--model-server-processes auto`);
- MLServer (its own virtual environment, `make setup`), serving the same Keras file through
  the custom runtime the tests use, over its OIP REST API (JSON, the image base64) and its OIP
  gRPC API (raw bytes);
- Ray Serve (HTTP, the JPEG as the body), one and two replicas, behind its default proxy and
  in its high-throughput mode (HAProxy in front), and over gRPC the same ways (serving
  StraightLine's own `InferenceService.Predict`), and BentoML (its JSON
  API, the image base64, two workers), each installed by this script into a virtual
  environment of its own (`bench/peers/venvs.py`: Ray 2.60.0, BentoML 1.4.40 here), loading
  the model with our code.
  Each peer is stopped through its own server first (Ray Serve's driver shuts its cluster and
  HAProxy down), then its process group, then anything left that names its directory.

    python -m bench.peers [--model small|xception] [--seconds 10] [--rounds 3]
        [--open-share 0.3] [--peers mlserver,ray,bentoml]
"""

import argparse
import base64
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import urllib3

from bench import report
from bench.batching_bench import in_process, jpegs
from bench.callers_bench import ENV, placer_and_flask
from bench.inference_bench import make_xception
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
OPEN_LOOP_THREADS = 64  # requests in flight at most in the open loop; past that they queue here
TIMEOUT_S = 30.0  # a request not answered by then counts as failed (gRPC: DEADLINE_EXCEEDED)
Call = Callable[[bytes], None]  # one request for one image; raises when it is not answered


class Tally:
    """Latencies of answered requests and failures by kind, from many threads."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def time(self, call: Call, image: bytes, since: float) -> None:
        """Makes one call and records it, its latency counted from `since`."""
        try:
            call(image)
        except Exception as error:  # counted, not fatal: a failure is a result here
            kind = error.code().name if isinstance(error, grpc.RpcError) else type(error).__name__
            with self._lock:
                self.failures[kind] = self.failures.get(kind, 0) + 1
        else:
            with self._lock:
                self.latencies.append(time.perf_counter() - since)

    def result(self, elapsed: float) -> dict:
        ordered = sorted(self.latencies) or [0.0]
        return {
            "rps": round(len(self.latencies) / elapsed, 1),
            "p50_ms": round(statistics.median(ordered) * 1e3, 2),
            "p99_ms": round(report.p99_of(ordered) * 1e3, 2),
            "failures": self.failures,
        }


def closed_loop(call: Call, images: list[bytes], seconds: float) -> dict:
    """Answered requests per second, their median and 99th percentile latency, and the
    failures by kind, with CALLERS callers each sending its next request on an answer."""
    tally = Tally()
    stop = time.perf_counter() + seconds

    def caller(offset: int) -> None:
        n = offset
        while time.perf_counter() < stop:
            tally.time(call, images[n % len(images)], time.perf_counter())
            n += 1

    return tally.result(report.run_together(caller, CALLERS))


def poisson_arrivals(rate: float, seconds: float, seed: int = 19) -> list[float]:
    """Arrival times (s from the start) of a Poisson process of `rate` per second."""
    rng, due, arrivals = random.Random(seed), 0.0, []
    while (due := due + rng.expovariate(rate)) < seconds:
        arrivals.append(due)
    return arrivals


def open_loop(call: Call, images: list[bytes], rate: float, seconds: float) -> dict:
    """Requests sent at Poisson arrivals of `rate` per second whatever the answers do; each
    request's latency runs from when it was due, so time spent waiting here for a free thread
    counts (no coordinated omission). Answered/s until the last answer: a server that keeps
    up answers the offered rate, one that falls behind less."""
    tally = Tally()
    start = time.perf_counter()
    with ThreadPoolExecutor(OPEN_LOOP_THREADS) as pool:
        for n, due in enumerate(poisson_arrivals(rate, seconds)):
            if (wait := start + due - time.perf_counter()) > 0:
                time.sleep(wait)
            pool.submit(tally.time, call, images[n % len(images)], start + due)
    result = tally.result(max(seconds, time.perf_counter() - start))
    result["offered_rps"] = rate
    return result


def rest_v1(url: str) -> Call:
    pool = urllib3.PoolManager(maxsize=OPEN_LOOP_THREADS, retries=False, timeout=TIMEOUT_S)

    def call(image: bytes) -> None:
        reply = pool.request("POST", url, body=image, headers={"Content-Type": "image/jpeg"})
        assert reply.status == 200, reply.data[:200]

    return call


def oip_rest(url: str, model: str) -> Call:
    """An OIP infer over REST in plain JSON (MLServer has no binary extension): the image
    base64, the top class asked for with the classification parameter."""
    pool = urllib3.PoolManager(maxsize=OPEN_LOOP_THREADS, retries=False, timeout=TIMEOUT_S)

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
            f"{url}/v2/models/{model}/infer",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert reply.status == 200, reply.data[:200]

    return call


def json_b64(url: str) -> Call:
    """BentoML's JSON API: the image base64 under its parameter's name."""
    pool = urllib3.PoolManager(maxsize=OPEN_LOOP_THREADS, retries=False, timeout=TIMEOUT_S)

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


@dataclass(frozen=True)
class Run:
    """One round's setting: the store and model every server serves, where its files go, and
    what measures a way of calling it."""

    store: ModelStore
    model: str
    workdir: Path
    measure: Callable[[str, Call], None]


def ray_serve_calls(run: Run) -> None:
    """Ray Serve, one and two replicas, over HTTP and gRPC: behind its default proxies, and in
    its high-throughput mode (HAProxy fronts both)."""
    python = str(venvs.ensure("ray") / "bin" / "python")
    for fast in (False, True):
        mode = "high-throughput mode, HAProxy" if fast else "default proxy"
        for replicas in (1, 2):
            [port, grpc_port, stats_port, metrics_port] = free_ports(4)
            call = rest_v1(f"http://127.0.0.1:{port}/classify")
            command = [
                python,
                "bench/peers/ray_serve_app.py",
                *("--store", str(run.store.root), "--model", run.model, "--port", str(port)),
                *("--replicas", str(replicas), "--grpc-port", str(grpc_port)),
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
                    run.measure(f"Ray Serve (HTTP, {mode}, {replicas} replica(s))", call)
                    ray_serve_grpc(run, f"127.0.0.1:{grpc_port}", f"{mode}, {replicas} replica(s)")


def ray_serve_grpc(run: Run, target: str, setting: str) -> None:
    """Ray Serve over gRPC, serving StraightLine's `Predict` (ready once HTTP answers:
    both proxies start with the application)."""
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        run.measure(f"Ray Serve (gRPC, {setting})", predict(stub, run.model))


def bentoml_calls(run: Run) -> None:
    [port] = free_ports(1)
    call = json_b64(f"http://127.0.0.1:{port}/classify")
    command = [
        str(venvs.ensure("bentoml") / "bin" / "bentoml"),
        *("serve", "bench.peers.bentoml_service:Classifier"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    env = venvs.environment(
        {"PEER_STORE": str(run.store.root), "PEER_MODEL": run.model, "PEER_WORKERS": "2"}
    )
    with peer_process(command, env, run.workdir / "bentoml.log", call):
        run.measure("BentoML (JSON, 2 workers)", call)


def oip_grpc_call(target: str, model: str) -> tuple[Call, grpc.Channel]:
    channel = grpc.insecure_channel(target)
    stub = oip_grpc.GRPCInferenceServiceStub(channel)

    def call(image: bytes) -> None:
        tensor = oip.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])
        wanted = oip.ModelInferRequest.InferRequestedOutputTensor(name="scores")
        wanted.parameters["classification"].int64_param = 1
        request = oip.ModelInferRequest(
            model_name=model,
            inputs=[tensor],
            outputs=[wanted],
            raw_input_contents=[oip_tensors.with_length(image)],
        )
        stub.ModelInfer(request, timeout=TIMEOUT_S)

    return call, channel


def predict(stub: inference_pb2_grpc.InferenceServiceStub, model: str) -> Call:
    """StraightLine's `InferenceService.Predict`, as the placer sends it to an adapter."""
    return _jpeg_call(stub.Predict, inference_pb2.PredictRequest, model)


def infer(stub: placer_pb2_grpc.PlacerServiceStub, model: str) -> Call:
    """StraightLine's `PlacerService.Infer`, as a client calls the placer."""
    return _jpeg_call(stub.Infer, placer_pb2.InferRequest, model)


def _jpeg_call(method: Callable[..., object], message: Callable[..., object], model: str) -> Call:
    """A call of a unary `method` whose request `message` carries a model and a JPEG."""
    ref = types_pb2.ModelRef(name=model)

    def call(image: bytes) -> None:
        method(message(model=ref, payload=image, content_type="image/jpeg"), timeout=TIMEOUT_S)

    return call


def straightline_calls(run: Run, arguments: tuple[str, ...] = (), setting: str = "") -> None:
    """An adapter's Predict, the placer's Infer; `arguments`: the adapter's, named `setting`."""
    with (
        placer_and_flask(run.store, run.workdir, arguments) as (placer, adapter),
        open_channel(adapter.address, Role.PLACER) as to_adapter,
        open_channel(placer.address, Role.CLIENT) as to_placer,
    ):
        adapter_stub = inference_pb2_grpc.InferenceServiceStub(to_adapter)
        placer_stub = placer_pb2_grpc.PlacerServiceStub(to_placer)
        run.measure(
            f"StraightLine adapter (gRPC Predict{setting})", predict(adapter_stub, run.model)
        )
        run.measure(f"StraightLine placer (gRPC Infer{setting})", infer(placer_stub, run.model))


def straightline_per_core_calls(run: Run) -> None:
    """The same with the Flask model server as one process per core."""
    straightline_calls(run, ("--model-server-processes", "auto"), ", a model server per core")


def mlserver_calls(run: Run) -> None:
    with running_mlserver(run.store.root, run.model, run.workdir) as urls:
        run.measure("MLServer (OIP REST, JSON)", oip_rest(urls["rest"], run.model))
        call, channel = oip_grpc_call(urls["grpc"].removeprefix("grpc://"), run.model)
        with channel:
            run.measure("MLServer (OIP gRPC)", call)


def model_server_calls(run: Run) -> None:
    """The model server alone, with the Flask adapter's default of 4 worker threads; then as
    one process per core sharing them, the client taking the processes in turn (what a client
    that sends straight to the model servers, with no hop between, would reach)."""
    cores = len(os.sched_getaffinity(0))
    with ExitStack() as servers:
        [url] = model_server_urls(run, servers, processes=1, threads=4)
        run.measure("StraightLine model server (REST v1)", rest_v1(url))
    with ExitStack() as servers:
        calls = [rest_v1(url) for url in model_server_urls(run, servers, cores, 4 // cores or 1)]
        turns = itertools.cycle(calls)
        run.measure(
            f"StraightLine model servers, {cores} processes (REST v1, in turn)",
            lambda image: next(turns)(image),
        )


def model_server_urls(run: Run, stack: ExitStack, processes: int, threads: int) -> list[str]:
    """Starts `processes` model servers of `threads` each, stopped with `stack`; their URLs."""
    urls = []
    for number in range(processes):
        server = ServiceProcess(
            "straightline_inference.modelserver",
            ["--store", str(run.store.root), "--listen", "127.0.0.1:0", "--threads", str(threads)],
            run.workdir / f"model-server-{processes}-{number}",
            ENV,
        ).wait_ready(timeout=180)
        stack.callback(server.terminate)
        urls.append(f"http://127.0.0.1:{server.ports['http']}/v1/models/{run.model}/predict")
    return urls


PEERS: dict[str, Callable[[Run], None]] = {
    "mlserver": mlserver_calls,
    "ray": ray_serve_calls,
    "bentoml": bentoml_calls,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=("small", "xception"), default="small")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--open-share",
        type=float,
        default=0.3,
        help="the open loop's arrival rate, as a share of the model's in-process rate (one "
        "image at a time)",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="which peers beside StraightLine, comma-separated (mlserver, ray, bentoml)",
    )
    args = parser.parse_args()
    peers = [PEERS[name] for name in args.peers.split(",") if name]
    images = jpegs()
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="straightline-peers-") as scratch:
        store = ModelStore(Path(scratch) / "models")
        if args.model == "xception":
            make_xception(store)
        else:
            make_classifier(store, args.model)
        floor = in_process(store, args.model, images, args.seconds)
        rate = args.open_share * floor["one_at_a_time_rps"]

        def measure(name: str, call: Call) -> None:
            closed_loop(call, images, 2.0)  # warm: every worker's first call
            result = closed_loop(call, images, args.seconds)
            result["open"] = open_loop(call, images, rate, args.seconds)
            runs.setdefault(name, []).append(result)
            print(name, result, flush=True)

        for round_ in range(args.rounds):
            for serve in (
                model_server_calls,
                straightline_calls,
                straightline_per_core_calls,
                *peers,
            ):
                workdir = Path(scratch) / f"{serve.__name__}-{round_}"
                serve(Run(store, args.model, workdir, measure))
    results = {
        "machine": report.machine(),
        "model": args.model,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "open_share": args.open_share,
        "in_process": floor,
        "runs": runs,
    }
    name = "peers" if args.model == "small" else f"peers-{args.model}"
    report.write(name, results, markdown(results))


def markdown(results: dict) -> str:
    floor = results["in_process"]
    single, batched = floor["one_at_a_time_rps"], floor["batches_of_8_rps"]
    model = "the small test model" if results["model"] == "small" else "Keras Xception (299 px)"
    lines = [
        f"## StraightLine and its peers, side by side: {results['model']} (issue 19)",
        "",
        f"`python -m bench.peers --model {results['model']}` on {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores): {model} and eight 320x240 JPEGs, "
        f"{results['rounds']} rounds in alternation, tracing off; medians of the rounds, and "
        f"their range. The floor: the model in this process, {single:.1f} images/s one at a "
        f"time (decode included), {batched:.1f} in batches of 8 (the model alone).",
        "",
        f"Closed loop, {CALLERS} callers, {results['seconds']:.0f} s per server and round:",
        "",
        "| server | answered/s | share of in-process (range) | share of batched | p50 ms | "
        "p99 ms | failed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, runs in results["runs"].items():
        rates = [r["rps"] for r in runs]
        rate = statistics.median(rates)
        lines.append(
            f"| {name} | {rate:.1f} | {rate / single:.2f} ({min(rates) / single:.2f}-"
            f"{max(rates) / single:.2f}) | {rate / batched:.2f} | "
            f"{median_of(runs, 'p50_ms'):.1f} | {median_of(runs, 'p99_ms'):.1f} | "
            f"{failed(runs)} |"
        )
    offered = results["open_share"] * single
    lines += [
        "",
        f"Open loop: Poisson arrivals at {offered:.1f} requests/s ({results['open_share']:.2f} "
        f"of the in-process rate) for {results['seconds']:.0f} s per server and round, at most "
        f"{OPEN_LOOP_THREADS} in flight; latency from when each request was due:",
        "",
        "| server | answered/s | p50 ms | p99 ms | failed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, runs in results["runs"].items():
        opened = [r["open"] for r in runs]
        lines.append(
            f"| {name} | {median_of(opened, 'rps'):.1f} | {median_of(opened, 'p50_ms'):.1f} | "
            f"{median_of(opened, 'p99_ms'):.1f} | {failed(opened)} |"
        )
    return "\n".join(lines)


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def failed(runs: list[dict]) -> str:
    """The failures of every round, by kind."""
    total: dict[str, int] = {}
    for run in runs:
        for kind, count in run["failures"].items():
            total[kind] = total.get(kind, 0) + count
    return ", ".join(f"{kind}: {count}" for kind, count in total.items()) or "none"


if __name__ == "__main__":
    main()

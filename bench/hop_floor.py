"""What one Python gRPC hop costs in CPU: a request forwarded by a thread-pool server and a
blocking channel (as the placer and the adapter forward today) against one forwarded by a
`grpc.aio` server and channel (issue 19: the placer's request path without a thread per call).

Three processes: a bare `grpc.aio` echo (the backend: a 16 KB request in, 100 bytes out, as an
image and its answer), a proxy in front of it (`sync` or `aio`), and 8 closed-loop callers
(one `grpc.aio` client in this process). Each setting runs for a while, in alternation, three
times; the callers also call the backend directly (no hop), the floor. Reported: answered
requests per second and the proxy's CPU per request (/proc), as ratios aio / sync.

    python -m bench.hop_floor [--seconds 8] [--rounds 3]
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc

from bench import report
from bench.callers_bench import cpu_seconds
from straightline_common.processes import ServiceProcess, write_port_file

METHOD = "/bench.Hop/Echo"
REQUEST_BYTES = 16 * 1024  # about the median animals4 JPEG
ANSWER = b"a" * 100  # about a top-5 answer
CALLERS = 8
PROXIES = {"sync": "thread-pool", "aio": "grpc.aio"}
THREADS = 64  # the placer's default --max-workers


def _handler(behaviour) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "bench.Hop", {"Echo": grpc.unary_unary_rpc_method_handler(behaviour)}
    )


async def _serve_backend(port_file: str) -> None:
    async def echo(request: bytes, context) -> bytes:
        return ANSWER

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(echo),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    write_port_file(port_file, {"grpc": port})
    await server.wait_for_termination()


async def _serve_aio_proxy(backend: str, port_file: str) -> None:
    channel = grpc.aio.insecure_channel(backend)
    forward = channel.unary_unary(METHOD)

    async def relay(request: bytes, context) -> bytes:
        return await forward(request, timeout=10)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(relay),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    write_port_file(port_file, {"grpc": port})
    await server.wait_for_termination()


def _serve_sync_proxy(backend: str, port_file: str) -> None:
    forward = grpc.insecure_channel(backend).unary_unary(METHOD)
    server = grpc.server(futures.ThreadPoolExecutor(THREADS))
    server.add_generic_rpc_handlers((_handler(lambda request, _: forward(request, timeout=10)),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    write_port_file(port_file, {"grpc": port})
    server.wait_for_termination()


async def _closed_loop(address: str, seconds: float) -> int:
    """CALLERS concurrent callers, one request after another; the answers in `seconds`."""
    payload = os.urandom(REQUEST_BYTES)
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(METHOD)
        for _ in range(CALLERS * 10):  # warm: connections, the pools' threads
            await call(payload, timeout=10)
        stop = time.perf_counter() + seconds

        async def caller() -> int:
            answered = 0
            while time.perf_counter() < stop:
                await call(payload, timeout=10)
                answered += 1
            return answered

        return sum(await asyncio.gather(*(caller() for _ in range(CALLERS))))


def _measure(address: str, proxy_pid: int | None, seconds: float) -> dict:
    before = cpu_seconds(proxy_pid) if proxy_pid else 0.0
    started = time.perf_counter()
    answered = asyncio.run(_closed_loop(address, seconds))
    elapsed = time.perf_counter() - started
    result = {"answered_rps": round(answered / elapsed, 1)}
    if proxy_pid:
        used = cpu_seconds(proxy_pid) - before
        result["proxy_cpu_us_per_request"] = round(used / answered * 1e6, 1)
    return result


def run(seconds: float, rounds: int, workdir: Path) -> dict:
    backend = ServiceProcess("bench.hop_floor", ["backend"], workdir / "backend").wait_ready()
    proxies = {
        mode: ServiceProcess(
            "bench.hop_floor", ["proxy", mode, backend.address], workdir / mode
        ).wait_ready()
        for mode in ("sync", "aio")
    }
    runs: dict[str, list[dict]] = {"direct": [], "sync": [], "aio": []}
    try:
        for _ in range(rounds):
            runs["direct"].append(_measure(backend.address, None, seconds))
            for mode, proxy in proxies.items():
                runs[mode].append(_measure(proxy.address, proxy.process.pid, seconds))
    finally:
        for process in (*proxies.values(), backend):
            process.terminate()
    return runs


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def markdown(runs: dict, seconds: float) -> str:
    def figures(mode: str, key: str) -> list[float]:
        return [r[key] for r in runs[mode]]

    sync_cpu, aio_cpu = (figures(m, "proxy_cpu_us_per_request") for m in ("sync", "aio"))
    direct = _median(figures("direct", "answered_rps"))
    rows = [
        "| path | answered/s (each round) | share of direct | proxy CPU per request, us |",
        "| --- | --- | --- | --- |",
        f"| direct (no hop) | {', '.join(map(str, figures('direct', 'answered_rps')))} | 1 | - |",
    ]
    for mode, cpu in (("sync", sync_cpu), ("aio", aio_cpu)):
        rps = figures(mode, "answered_rps")
        rows.append(
            f"| through a {PROXIES[mode]} proxy | {', '.join(map(str, rps))} | "
            f"{_median(rps) / direct:.2f} | {', '.join(map(str, cpu))} |"
        )
    ratio = statistics.median(aio_cpu) / statistics.median(sync_cpu)
    return "\n".join(
        [
            "## One Python gRPC hop: thread pool against asyncio (issue 19)",
            "",
            f"`python -m bench.hop_floor --seconds {seconds:g}` ({_machine()}): "
            f"{CALLERS} callers, {REQUEST_BYTES // 1024} KB in, {len(ANSWER)} bytes out.",
            "",
            *rows,
            "",
            f"CPU per forwarded request, aio / sync: **{ratio:.2f}** (medians).",
        ]
    )


def _machine() -> str:
    machine = report.machine()
    return f"{machine['cpu']}, {machine['cores']} cores, grpcio {machine['grpcio']}"


def main() -> None:
    if sys.argv[1:2] == ["backend"]:
        return asyncio.run(_serve_backend(sys.argv[-1]))
    if sys.argv[1:2] == ["proxy"]:
        _, _, mode, backend, _, port_file = sys.argv
        if mode == "aio":
            return asyncio.run(_serve_aio_proxy(backend, port_file))
        return _serve_sync_proxy(backend, port_file)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        runs = run(args.seconds, args.rounds, Path(workdir))
    text = markdown(runs, args.seconds)
    report.write("hop_floor", {"machine": report.machine(), "runs": runs}, text)
    print(text)
    return None


if __name__ == "__main__":
    main()

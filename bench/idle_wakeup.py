"""What an idle gap costs one loopback hop: a Python gRPC server (grpcio's sync server, as the
services use) against a plain TCP echo, each called one request at a time after gaps of 0 to
58 ms (58 ms: one Xception inference, during which the placer and the adapter sit idle). For
gRPC the round trip is split at the moment the handler runs (both processes read the same
monotonic clock), into the request's way in and the answer's way out.

    python -m bench.idle_wakeup   # (make bench runs it too)

Results: bench/results/idle_wakeup.json and a section of BENCHMARKS.md.

Explains the inference benchmark's idle line (issue 3).
"""

import argparse
import socket
import statistics
import struct
import subprocess
import sys
import time
from concurrent import futures

import grpc

from bench import report

GAPS_MS = (0, 1, 5, 20, 58)
METHOD = "/bench.Clock/Now"


def serve_grpc() -> None:
    """Answers every call with the moment its handler ran."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.unary_unary_rpc_method_handler(
        lambda request, context: struct.pack("d", time.perf_counter()),
        request_deserializer=bytes,
        response_serializer=bytes,
    )
    service, method = METHOD.strip("/").split("/")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service, {method: handler}),)
    )
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    server.start()
    server.wait_for_termination()


def serve_tcp() -> None:
    """Echoes one connection's bytes back."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := connection.recv(4096):
        connection.sendall(data)


def start_child(kind: str) -> tuple[subprocess.Popen, int]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.idle_wakeup", "--serve", kind],
        stdout=subprocess.PIPE,
        text=True,
    )
    return child, int(child.stdout.readline())


def after_gaps(call, gap_s: float, n: int) -> list:
    samples = []
    for _ in range(n):
        if gap_s:
            time.sleep(gap_s)
        samples.append(call())
    return samples


def median_us(values) -> float:
    return round(statistics.median(values) * 1e6, 1)


def measure_grpc(port: int, n: int) -> dict:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        now = channel.unary_unary(METHOD)

        def call():
            sent = time.perf_counter()
            handled = struct.unpack("d", now(b"x"))[0]
            return sent, handled, time.perf_counter()

        after_gaps(call, 0, 500)  # warm-up
        results = {}
        for gap_ms in GAPS_MS:
            samples = after_gaps(call, gap_ms / 1e3, n)
            results[gap_ms] = {
                "round_trip_us": median_us([end - sent for sent, _, end in samples]),
                "request_us": median_us([handled - sent for sent, handled, _ in samples]),
                "answer_us": median_us([end - handled for _, handled, end in samples]),
            }
        return results


def measure_tcp(port: int, n: int) -> dict:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def call():
            sent = time.perf_counter()
            connection.sendall(b"x" * 100)
            connection.recv(4096)
            return time.perf_counter() - sent

        after_gaps(call, 0, 500)
        return {
            gap_ms: {"round_trip_us": median_us(after_gaps(call, gap_ms / 1e3, n))}
            for gap_ms in GAPS_MS
        }


def measure(n: int) -> dict:
    results = {"machine": report.machine(), "requests_per_gap": n}
    for kind, measure_one in (("grpc", measure_grpc), ("tcp", measure_tcp)):
        child, port = start_child(kind)
        try:
            results[kind] = measure_one(port, n)
        finally:
            child.kill()
            child.wait()
    return results


def markdown(results: dict) -> str:
    m = results["machine"]
    rows = [
        f"| {gap} ms | {results['tcp'][gap]['round_trip_us']} | {g['round_trip_us']} | "
        f"{g['request_us']} | {g['answer_us']} |"
        for gap, g in results["grpc"].items()
    ]
    return f"""## What an idle gap costs one hop (issue 3)

Machine: {m["cpu"]}, {m["cores"]} cores; Python {m["python"]}, grpcio {m["grpcio"]}. Command:
`python -m bench.idle_wakeup`. Medians of {results["requests_per_gap"]} calls per gap, one at
a time, in microseconds.

| idle before | TCP echo | gRPC round trip | gRPC: call to handler | gRPC: handler to answer |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{reading(results)}
"""


def reading(results: dict) -> str:
    busy, idle = results["grpc"][GAPS_MS[0]], results["grpc"][GAPS_MS[-1]]
    tcp_added = (
        results["tcp"][GAPS_MS[-1]]["round_trip_us"] - results["tcp"][GAPS_MS[0]]["round_trip_us"]
    )
    added = idle["round_trip_us"] - busy["round_trip_us"]
    way_in = idle["request_us"] - busy["request_us"]
    two_hops_ms = 2 * idle["round_trip_us"] / 1e3
    return (
        f"Reading: after {GAPS_MS[-1]} ms idle one gRPC hop takes {added:.0f} us longer than "
        f"back to back, {way_in:.0f} us of it before the handler runs; a plain TCP echo between "
        f"two Python processes, {tcp_added:.0f} us longer. The placer and the adapter put two "
        f"such hops in front of the model server: after the idle gap, two bare hops that do "
        f"nothing take {two_hops_ms:.2f} ms, against the 2 ms the inference target allows "
        "adapter and placer together."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--serve", choices=["grpc", "tcp"], help="run as the measured server")
    args = parser.parse_args()
    if args.serve:
        return {"grpc": serve_grpc, "tcp": serve_tcp}[args.serve]()
    results = measure(args.requests)
    report.write("idle_wakeup", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

"""python -m bench.lambda_service --function NAME --model small --answers FILE [options]

Serves the Lambda Invoke API on loopback for one function whose invocations take the time the
calibration says and answer what the model answers (precomputed). Writes its port to
--port-file as {"http": PORT}. Stops on SIGTERM."""

import argparse
import json
import signal
import threading

from bench.lambda_service.calibration import MODELS, Calibration
from bench.lambda_service.service import DEFAULT_CONCURRENCY, Function, LambdaService, serve
from straightline_common.processes import write_port_file


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lambda_service", description=__doc__)
    parser.add_argument("--function", default="straightline")
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--answers", required=True, help="JSON: sha256 of an image -> answer")
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--round-trip-ms", type=float, default=20.0)
    parser.add_argument("--reap-after-s", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args(argv)
    if not 128 <= args.memory_mb <= 10240:
        parser.error("--memory-mb must be between 128 and 10240, as Lambda's")
    with open(args.answers) as file:
        answers = json.load(file)
    calibration = Calibration(MODELS[args.model], args.memory_mb, args.round_trip_ms / 1e3)
    service = LambdaService(
        [Function(args.function, calibration, answers)],
        concurrency=args.concurrency,
        reap_after_s=args.reap_after_s,
        seed=args.seed,
    )
    server = serve(service)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    write_port_file(args.port_file, {"http": server.server_address[1]})
    server.serve_forever()


if __name__ == "__main__":
    main()

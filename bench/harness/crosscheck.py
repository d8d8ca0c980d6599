"""Cross-check of the load generator against the paper's own tool (issue 6): the same
scenario (constant arrival rate, one POST of the same image per session) run with Artillery
and with our generator against the Flask model server's REST route; their response-time
medians should agree within 10%. The tools take turns for a few rounds, so that a slow
minute of the machine does not land on one of them only, and both collect the time the server
itself reports in each answer (`timings.total_ms`): what a tool adds on top of it is its own
measurement, the rest is the server.

    python -m bench.harness.crosscheck [--model xception|small] [--rate 4] [--seconds 30]
                                       [--rounds 3]

Artillery comes from npm at run time (`npx --yes artillery@2.0.34`), so it is not a
dependency of the project; the result is written to bench/results/crosscheck.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench import report
from bench.harness import generator, results, schedule
from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess

ARTILLERY = "artillery@2.0.34"
PROCESSOR = """const fs = require("fs");
const image = fs.readFileSync(process.env.CROSSCHECK_IMAGE);
module.exports = {
  setImage(requestParams, context, ee, next) {
    requestParams.body = image;
    requestParams.headers = { "Content-Type": "image/jpeg" };
    return next();
  },
  recordServerTime(requestParams, response, context, ee, next) {
    try {
      ee.emit("histogram", "server.total_ms", JSON.parse(response.body).timings.total_ms);
    } catch (error) {}
    return next();
  },
};
"""
SCENARIO = """config:
  target: "http://127.0.0.1:{port}"
  processor: "./processor.js"
  phases:
    - duration: {seconds}
      arrivalRate: {rate}
  http:
    timeout: 50
scenarios:
  - flow:
      - post:
          url: "/v1/models/{model}/predict"
          beforeRequest: "setImage"
          afterResponse: "recordServerTime"
"""


def run_artillery(workdir: Path, port: int, model: str, image: Path, rate: int, seconds: int):
    (workdir / "processor.js").write_text(PROCESSOR)
    (workdir / "scenario.yml").write_text(
        SCENARIO.format(port=port, rate=rate, seconds=seconds, model=model)
    )
    subprocess.run(
        ["npx", "--yes", ARTILLERY, "run", "--output", "report.json", "scenario.yml"],
        cwd=workdir,
        # Artillery's browser engine would download Chromium at install: not needed here.
        env={
            **os.environ,
            "CROSSCHECK_IMAGE": str(image),
            "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1",
            "npm_config_ignore_scripts": "true",
        },
        check=True,
        capture_output=True,
    )
    aggregate = json.loads((workdir / "report.json").read_text())["aggregate"]
    times = aggregate["summaries"]["http.response_time"]
    return {
        "requests": aggregate["counters"].get("http.requests", 0),
        "ok": aggregate["counters"].get("http.codes.200", 0),
        "median_ms": times["median"],
        "p95_ms": times["p95"],
        "server_median_ms": round(aggregate["summaries"]["server.total_ms"]["median"], 1),
    }


def run_ours(port: int, model: str, image: bytes, rate: int, seconds: int) -> dict:
    arrivals = schedule.arrivals(schedule.parse(f"constant:{seconds}:{rate}"))
    target = generator.RestTarget(f"http://127.0.0.1:{port}/v1/models/{model}/predict", 50)
    try:
        records = generator.run(
            target, arrivals, [("image", image, "image/jpeg")] * len(arrivals), 50
        )
    finally:
        target.close()
    ok = [r for r in records if r.ok]
    times = results.percentiles([r.response_ms for r in ok])
    return {
        "requests": len(records),
        "ok": len(ok),
        "median_ms": times["median"],
        "p95_ms": times["p95"],
        "server_median_ms": results.percentiles(target.server_ms)["median"],
    }


def compare(rounds: list[dict]) -> dict:
    """Per tool, the mean over rounds of its median response time, of the server's median
    time, and of the difference (the tool's own share); and whether the medians agree."""
    tools = {}
    for tool in ("ours", "artillery"):
        runs = [r[tool] for r in rounds]
        tools[tool] = {
            key: round(statistics.mean(run[key] for run in runs), 1)
            for key in ("median_ms", "server_median_ms")
        }
        tools[tool]["added_ms"] = round(
            tools[tool]["median_ms"] - tools[tool]["server_median_ms"], 1
        )
    ours, artillery = tools["ours"]["median_ms"], tools["artillery"]["median_ms"]
    difference = abs(ours - artillery) / artillery
    return {
        **tools,
        "median_difference": round(difference, 3),
        "within_10_percent": difference <= 0.10,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("xception", "small"), default="xception")
    parser.add_argument("--rate", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=30, help="per tool and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from bench.harness.__main__ import make_model
    from tests.support.models import image_bytes

    with tempfile.TemporaryDirectory(prefix="straightline-crosscheck-") as scratch:
        workdir = Path(scratch)
        make_model(ModelStore(workdir / "models"), args.model)
        picture = workdir / "image.jpg"
        picture.write_bytes(image_bytes((200, 120, 40), size=(160, 120)))
        payload = picture.read_bytes()
        server = ServiceProcess(
            "straightline_inference.modelserver",
            ["--store", str(workdir / "models"), "--listen", "127.0.0.1:0", "--threads", "4"],
            workdir / "server",
        )
        try:
            port = server.wait_ready(120).ports["http"]
            run_ours(port, args.model, payload, args.rate, 3)  # warms the server: not counted
            rounds = [
                {
                    "ours": run_ours(port, args.model, payload, args.rate, args.seconds),
                    "artillery": run_artillery(
                        workdir, port, args.model, picture, args.rate, args.seconds
                    ),
                }
                for _ in range(args.rounds)
            ]
        finally:
            server.terminate()
    outcome = {
        "scenario": {
            "model": args.model,
            "rate_rps": args.rate,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "image_bytes": len(payload),
        },
        **compare(rounds),
        "rounds": rounds,
    }
    (report.RESULTS / "crosscheck.json").write_text(json.dumps(outcome, indent=2) + "\n")
    print(json.dumps(outcome, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

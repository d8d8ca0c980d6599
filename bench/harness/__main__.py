"""The evaluation harness (issues 6 and 14): StraightLine against single platforms, under the
same open-loop load, with real models on this machine, in two testbeds.

    python -m bench.harness                                  # the full experiment
    python -m bench.harness --models small --phases ramp:20:2-20 --out /tmp/smoke

Testbeds (`--testbeds`): `local`, every platform on this machine (serverless: the Lambda image
under AWS's emulator, sharing the cores); `remote-serverless`, as in the paper, serverless on
AWS Lambda, here the Lambda service emulator (bench/lambda_service), reached through the
adapter's AWS path; everything else the same. Both run the same scenario (the local testbed's
measured capacity scales it) and the same request sequence.

For each model (`small`: a 32 px classifier; `xception`: Keras Xception at 299 px, the
paper's) it starts the placer and one adapter per platform as local processes, measures the
machine's capacity for the model, then runs the same scenario (by default a ramp over 180 s
to --ramp-to times the rate the stack sustained; same seed, same request sequence) under
each policy: `straightline` (Algorithm 1 as the paper writes it, fallback on),
`capacity-aware` and `latency-aware` (our variants of it, docs/placer.md), `slo-aware` (the
SLO-aware rule against the model's latency objective, `--objective-ms`; in the local testbed it
sheds what it predicts late, `shed_late_requests`), and the policy
pinned to `flask`, `docker` or `serverless` (fallback off: exactly one platform). It writes per
request CSV, a JSON summary per model, figures (PNG), and tables.md. `--from-records` redoes
the summaries, figures and tables from the CSV and JSON a previous run wrote.

`--rounds N` runs the policies N times in turn (A B C, A B C): the machine's drift between
runs falls on every policy alike, the tables show each round, and the SLO-aware rule's
targets are judged twice: on the first round as written, and on the rounds averaged per bin,
where a shortfall counts only beyond the spread of the best single platform's own rounds.
"""

import argparse
import json
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import report
from bench.harness import (
    capacity,
    figures,
    generator,
    images,
    remote,
    results,
    schedule,
    slo,
    targets,
)
from bench.harness.cpu import CpuSampler
from scripts import localstack
from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.modelstore import ModelStore
from straightline_common.timeconv import duration
from straightline_inference.stats import MAX_AGE_S as STATS_MAX_AGE_S


def _policy(platform=types_pb2.PLATFORM_UNSPECIFIED, rule=types_pb2.PLACEMENT_RULE_PAPER):
    return {
        "pinned_platform": platform,
        "placement_rule": rule,
        "fallback_enabled": platform == types_pb2.PLATFORM_UNSPECIFIED,
    }


# The placer's policy fields for each policy the harness compares.
POLICIES = {
    "straightline": _policy(),
    "capacity-aware": _policy(rule=types_pb2.PLACEMENT_RULE_CAPACITY_AWARE),
    "latency-aware": _policy(rule=types_pb2.PLACEMENT_RULE_LATENCY_AWARE),
    "slo-aware": _policy(rule=types_pb2.PLACEMENT_RULE_SLO_AWARE),
    "flask": _policy(types_pb2.PLATFORM_FLASK),
    "docker": _policy(types_pb2.PLATFORM_DOCKER),
    "serverless": _policy(types_pb2.PLATFORM_SERVERLESS),
}
DEFAULT_IMAGES = report.ROOT.parent / "shared" / "datasets" / "animals4"
# Queues of 8, fixed: what every pass of docs/evaluation.md ran with (the adapters' default
# before it became the queue their slots drain within the objective), so passes compare.
PLATFORM_ARGUMENTS = {
    "flask": ["--threads", "2", "--queue-limit", "8"],
    "docker": [
        *("--max-containers", "2", "--threads-per-container", "1", "--min-warm", "2"),
        *("--queue-limit", "8"),
    ],
    "serverless": ["--concurrency", "4", "--min-warm", "4"],
}
TESTBEDS = ("local", "remote-serverless")
MAX_ROUNDS = 10
# The latency objective of each model (ms): about twice what one image takes through the
# stack idle on the slower of its platforms, so that it is met unless requests queue.
OBJECTIVES_MS = {"small": 100.0, "xception": 300.0}


def make_model(store: ModelStore, model: str) -> None:
    if model == "xception":
        from bench.inference_bench import make_xception

        make_xception(store)
    else:
        from tests.support.models import make_classifier

        make_classifier(store, "small")


def docker_ready() -> bool:
    from straightline_inference.adapter import containers

    return containers.engine_reachable()


def on_this_host(stub, testbed: str) -> list:
    """The platforms that run on this machine, as sharing its cores (the SLO-aware rule's
    predictions stretch with the requests running on them); remote serverless has its own."""
    settings = stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy.platform_settings
    for platform in settings:
        if testbed == "local" or platform.platform != types_pb2.PLATFORM_SERVERLESS:
            platform.host, platform.host_cores = "this-machine", os.cpu_count() or 1
    return list(settings)


def run_model(args, model: str, testbed: str, workdir: Path, pool: list, phases: str) -> dict:
    store = ModelStore(workdir / "models")
    make_model(store, model)
    platforms = dict(PLATFORM_ARGUMENTS)
    if not docker_ready():
        del platforms["docker"]
        platforms["serverless"] = [*platforms["serverless"], "--runner", "process"]
    policies = [p for p in args.policies if p in figures.PLACING_POLICIES or p in platforms]
    objective_ms = args.objective_ms or OBJECTIVES_MS[model]
    placer_args = []
    with ExitStack() as stack:
        if testbed == "remote-serverless":
            platforms["serverless"] = remote.start_lambda(
                stack, store, model, workdir, pool, args.lambda_concurrency
            )
            placer_args = ["--max-workers", str(64 + args.lambda_concurrency)]
        placer = localstack.start_placer(stack, workdir, *placer_args)
        localstack.start_adapters(stack, placer.address, store.root, workdir, platforms)
        channel = stack.enter_context(open_channel(placer.address, Role.OPERATOR))
        stub = placer_pb2_grpc.PlacerServiceStub(channel)
        reports = localstack.serving_reports(stub, model, len(platforms), timeout=120)
        _, first, content_type = pool[0]
        localstack.warm_up(stub, model, reports, (first, content_type))
        measured = {
            "physical": capacity.physical_limit(store, model, first, content_type),
            "through_placer": capacity.sustained(
                stub,
                model,
                first,
                content_type,
                sum(r.capacity_total for r in reports),
                args.capacity_s,
            ),
        }
        print(f"{model} ({testbed}): capacity {json.dumps(measured)}")
        phases = phases or schedule.scaled_ramp(measured["through_placer"]["rps"], args.ramp_to)
        arrivals = schedule.arrivals(schedule.parse(phases))
        payloads = images.sequence(pool, len(arrivals), args.seed)
        objective = results.Objective(
            objective_ms,
            slo.Costing({localstack.PLATFORM_NAMES[r.platform]: r.capacity_total for r in reports}),
        )
        localstack.set_policy(
            stub,
            latency_objectives={model: duration(objective_ms / 1e3)},
            platform_settings=on_this_host(stub, testbed),
            # Where capacity is fixed a late answer only delays those behind it: the SLO-aware
            # rule refuses what it cannot answer in time. With serverless to grow into, never.
            shed_late_requests=testbed == "local",
        )
        rounds: list[dict] = []
        for number in range(1, args.rounds + 1):  # A B C, A B C: drift falls on every policy
            rounds.append({})
            for policy in policies:
                localstack.set_policy(stub, **POLICIES[policy])
                # The frequency window and the adapters' recent statistics forget the last run.
                time.sleep(args.settle_s)
                print(f"{model} / {policy} (round {number}): {len(arrivals)} requests")
                target = generator.PlacerTarget(stub, model, args.timeout)
                with CpuSampler() as cpu:
                    records = generator.run(target, arrivals, payloads, args.timeout)
                results.write_csv(records, args.out / testbed / records_name(model, policy, number))
                rounds[-1][policy] = summarise(records, cpu.samples, args.bin_s, objective)
                print(f"  {json.dumps(rounds[-1][policy]['summary'])}")
        localstack.set_policy(stub, **POLICIES["straightline"])
    return {
        "model": model,
        "testbed": testbed,
        "capacity": measured,
        "phases": phases,
        "objective_ms": objective_ms,
        "costing": objective.costing.as_json(),
        "runs": rounds[0],
        "repeats": rounds[1:],
    }


def records_name(model: str, policy: str, round_number: int = 1) -> str:
    """The CSV of one policy's run in one round (the first round's keeps its old name)."""
    suffix = f"-round{round_number}" if round_number > 1 else ""
    return f"{model}-{policy}{suffix}.csv"


def summarise(records: list, cpu_samples: list, bin_s: float, objective) -> dict:
    elapsed = max(r.done_s for r in records)
    return {
        "summary": results.summary(records, elapsed, cpu_samples, objective),
        "over_time": results.over_time(records, bin_s, objective),
        "cpu": cpu_samples,
    }


def table(outcome: dict) -> str:
    lines = [
        f"### {outcome['model']}, testbed {outcome.get('testbed', 'local')}",
        "",
        f"Scenario `{outcome['phases']}`; TensorFlow threads per op: "
        f"{outcome.get('tf_threads', 'default')}; capacity: {json.dumps(outcome['capacity'])}; "
        f"latency objective {outcome.get('objective_ms')} ms",
        "",
        "| policy | requests | SLO attainment | cost / 1,000 requests | failure rate "
        "| fails from (rps offered) | median ms | p95 ms | p99 ms "
        "| throughput rps: mean / best 30 s | flask / docker / serverless | fell back | CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for policy, run in outcome["runs"].items():
        s = run["summary"]
        share = " / ".join(f"{s['share'].get(p, 0):.2f}" for p in ("flask", "docker", "serverless"))
        onset = results.failure_onset(run["over_time"])
        lines.append(
            f"| {policy} | {s['requests']} | {_share(s.get('slo_attainment'))} | "
            f"{_dollars(s.get('cost_per_1000_usd'))} | {s['failure_rate']:.3f} | "
            f"{'never' if onset is None else round(onset, 1)} | "
            f"{s['response_ms']['median']} | {s['response_ms']['p95']} | "
            f"{s['response_ms']['p99']} | {s['throughput_rps']} / {s['sustained_rps']} | "
            f"{share} | "
            f"{s['fell_back']} | {s['cpu_percent_mean']} |"
        )
    for policy in figures.PLACING_POLICIES:
        if policy in outcome["runs"]:
            lines += ["", *platform_table(policy, outcome["runs"][policy]["summary"])]
    if outcome.get("targets"):
        lines += ["", *targets_table(outcome["targets"], outcome["capacity"])]
    if outcome.get("slo_targets"):
        lines += ["", *slo_targets_table(outcome["slo_targets"], "the first round")]
    if outcome.get("repeats"):
        lines += ["", *rounds_table(outcome)]
    if outcome.get("slo_targets_over_rounds"):
        over_rounds = f"the {1 + len(outcome['repeats'])} rounds, averaged per bin"
        lines += ["", *slo_targets_table(outcome["slo_targets_over_rounds"], over_rounds)]
    return "\n".join(lines)


def rounds_table(outcome: dict) -> list[str]:
    rounds = [outcome["runs"], *outcome["repeats"]]
    lines = [
        f"Every policy in {len(rounds)} rounds of the same request sequence, in turn (A B C, "
        "A B C): SLO attainment and cost per 1,000 requests in each round:",
        "",
        "| policy | " + " | ".join(f"round {n}" for n in range(1, len(rounds) + 1)) + " |",
        "| --- |" + " --- |" * len(rounds),
    ]
    for policy in outcome["runs"]:
        summaries = [r[policy]["summary"] for r in rounds if policy in r]
        lines.append(
            f"| {policy} | "
            + " | ".join(
                f"{_share(s.get('slo_attainment'))}, {_dollars(s.get('cost_per_1000_usd'))}"
                for s in summaries
            )
            + " |"
        )
    return lines


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _dollars(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def slo_targets_table(checked: dict, judged_on: str) -> list[str]:
    lines = [
        "Targets of issue 14 (bench/harness/targets.py, `check_slo`), for the SLO-aware rule "
        f"against the single platforms, per 10 s bin, over {judged_on}:",
        "",
        "| target | bins checked | bins missed | met |",
        "| --- | --- | --- | --- |",
    ]
    for target in checked.values():
        missed = ", ".join(_missed_bin(b) for b in target["missed"]) or "none"
        lines.append(f"| {target['what']} | {target['bins']} | {missed} | {_met(target)} |")
    lines += [
        "",
        "p: the chance of a shortfall this large or larger between two policies that answer "
        "in time alike (one-sided Fisher exact test over the bin's requests, every round's); "
        "above 0.05 it is within sampling noise. Over rounds, a shortfall counts only beyond "
        "the spread of the best single platform's own rounds in the bin (noise).",
    ]
    return lines


def _missed_bin(missed: dict) -> str:
    notes = [f"p {missed['p_value']:.2f}"] if "p_value" in missed else []
    notes += [f"noise {missed['noise']:.0%}"] if "noise" in missed else []
    return f"{missed['rate_rps']:g} rps" + (f" ({', '.join(notes)})" if notes else "")


def _met(target: dict) -> str:
    return "met" if target["met"] else "not met"


def _rate(rps: float | None) -> str:
    return "never" if rps is None else f"{rps:.1f}"


def targets_table(checked: dict, capacity: dict) -> list[str]:
    lines = [
        "Targets (bench/harness/targets.py): 1. failing from no lower an offered rate than the "
        "best single platform; 2. bins whose p95 is above the best single platform's, over "
        "answered requests / with failures counted as misses; 3. best 30 s of answers against "
        f"the physical limit ({capacity['physical']['limit_rps']} requests/s):",
        "",
        "| policy | 1. fails from (rps offered) | 2. bins with p95 above the best single "
        "| 3. best 30 s / physical limit |",
        "| --- | --- | --- | --- |",
    ]
    for policy, t in checked.items():
        onset, bins, throughput = t["failure_onset"], t["p95_per_bin"], t["throughput"]
        lines.append(
            f"| {policy} | {_rate(onset['fails_from'])} against {onset['best_single']}'s "
            f"{_rate(onset['best_single_fails_from'])}: {_met(onset)} "
            f"| {len(bins['above_answered'])} / {len(bins['above_counting_failures'])} of "
            f"{bins['bins']}: {_met(bins)} "
            f"| {throughput['share']:.0%}: {_met(throughput)} |"
        )
    return lines


def platform_table(policy: str, summary: dict) -> list[str]:
    lines = [
        f"{policy}: answered requests by the platform that served them:",
        "",
        "| platform | served | median ms | p95 ms | p99 ms | session median ms | session p95 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for platform, answered in summary["by_platform"].items():
        response, session = answered["response_ms"], answered["session_ms"]
        lines.append(
            f"| {platform} | {answered['served']} | {response['median']} | {response['p95']} "
            f"| {response['p99']} | {session['median']} | {session['p95']} |"
        )
    errors = summary.get("prediction_error")
    if errors:
        lines += [
            "",
            "Prediction error (observed response time minus the latency predicted on the "
            "platform that served it): "
            + "; ".join(
                f"{p} median {e['median_ms']} ms, median absolute {e['median_abs_ms']} ms "
                f"over {e['n']}"
                for p, e in errors.items()
            ),
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__)
    parser.add_argument("--models", default="small,xception")
    parser.add_argument("--testbeds", default=",".join(TESTBEDS))
    parser.add_argument(
        "--objective-ms",
        type=float,
        default=0.0,
        help=f"latency objective (default per model: {OBJECTIVES_MS})",
    )
    parser.add_argument(
        "--lambda-concurrency",
        type=int,
        default=48,
        help="remote-serverless: the account's concurrency (and the adapter's)",
    )
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every policy this many times, in turn (A B C, A B C), and judge the "
        "targets also over the rounds, against each bin's spread between them",
    )
    parser.add_argument("--phases", default="", help="default: a ramp scaled by --ramp-to")
    parser.add_argument(
        "--ramp-to",
        type=float,
        default=3.0,
        help="without --phases: ramp over 180 s to this multiple of the rate the stack "
        "sustains through the placer (measured first)",
    )
    parser.add_argument(
        "--tf-threads",
        type=int,
        default=0,
        help="threads per TensorFlow op in every model process, this one's included "
        "(TF_NUM_INTRAOP_THREADS; 0: TensorFlow's default, one per core)",
    )
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--timeout", type=float, default=50.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bin-s", type=float, default=10.0)
    parser.add_argument("--settle-s", type=float, default=STATS_MAX_AGE_S + 1.0)
    parser.add_argument("--capacity-s", type=float, default=15.0, help="closed-loop measurement")
    parser.add_argument("--out", type=Path, default=report.RESULTS / "evaluation-slo")
    parser.add_argument(
        "--from-records",
        action="store_true",
        help="redo summaries, figures and tables.md from a previous run's CSV and JSON",
    )
    args = parser.parse_args(argv)
    args.policies = [p for p in args.policies.split(",") if p]
    unknown = set(args.policies) - set(POLICIES)
    if unknown:
        parser.error(f"unknown policies {sorted(unknown)}; choose from {list(POLICIES)}")
    testbeds = [t for t in args.testbeds.split(",") if t]
    if not testbeds or set(testbeds) - set(TESTBEDS):
        parser.error(f"--testbeds: one or more of {', '.join(TESTBEDS)}")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    if not 1 <= args.lambda_concurrency <= 1000:
        parser.error("--lambda-concurrency must be between 1 and 1000 (Lambda's default)")
    for testbed in testbeds:
        (args.out / testbed).mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    if args.from_records:
        return report_from_records(args.out, models, testbeds, args.bin_s)
    if args.ramp_to <= 0:
        parser.error("--ramp-to must be positive")
    if args.tf_threads < 0:
        parser.error("--tf-threads must be 0 (TensorFlow's default) or more")
    if args.tf_threads:
        # Before any TensorFlow import; the adapters, their model servers and their
        # containers inherit it.
        os.environ.update(TF_NUM_INTRAOP_THREADS=str(args.tf_threads), TF_NUM_INTEROP_THREADS="1")
    if args.phases:
        schedule.parse(args.phases)  # refused before any model is built
    pool = images.load(args.images, seed=args.seed)
    for model in models:
        phases = args.phases
        for testbed in testbeds:  # the first testbed's scenario is every testbed's
            with tempfile.TemporaryDirectory(prefix=f"straightline-eval-{model}-") as workdir:
                outcome = run_model(args, model, testbed, Path(workdir), pool, phases)
            phases = outcome["phases"]
            outcome["machine"] = report.machine()
            outcome["tf_threads"] = args.tf_threads or "default"
            save(outcome, args.out / testbed)
    return write_tables(args.out, models, testbeds)


def report_from_records(out: Path, models: list[str], testbeds: list[str], bin_s: float) -> int:
    for testbed in testbeds:
        for model in models:
            outcome = json.loads((out / testbed / f"{model}.json").read_text())
            objective = results.Objective(
                outcome["objective_ms"], slo.Costing.from_json(outcome["costing"])
            )
            for number, runs in enumerate([outcome["runs"], *outcome.get("repeats", [])], 1):
                for policy, run in runs.items():
                    name = records_name(model, policy, number)
                    records = results.read_csv(out / testbed / name)
                    runs[policy] = summarise(records, run["cpu"], bin_s, objective)
            save(outcome, out / testbed)
    return write_tables(out, models, testbeds)


def save(outcome: dict, out: Path) -> None:
    """A model's JSON result, with the targets checked, and its figures."""
    outcome["targets"] = targets.check(outcome)
    outcome["slo_targets"] = targets.check_slo(outcome)
    outcome["slo_targets_over_rounds"] = targets.check_slo_over_rounds(outcome)
    (out / f"{outcome['model']}.json").write_text(json.dumps(outcome, indent=1) + "\n")
    figures.draw(outcome["model"], outcome["runs"], out, outcome.get("objective_ms"))


def write_tables(out: Path, models: list[str], testbeds: list[str]) -> int:
    """tables.md from the models' JSON results, every testbed."""
    outcomes = [
        json.loads((out / testbed / f"{model}.json").read_text())
        for testbed in testbeds
        for model in models
    ]
    (out / "tables.md").write_text("\n\n".join(table(o) for o in outcomes) + "\n")
    print((out / "tables.md").read_text())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())

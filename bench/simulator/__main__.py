"""python -m bench.simulator [--seconds 120] [--peak-rps 10000] [--policies ...]

Every placing rule and every single platform at 100 times this machine (bench/simulator/
scale.py), on the same arrival trace, in virtual time; the placer's own code decides. Writes
bench/results/simulation/xception.json (summaries, 10 s bins, targets), its figures, and
tables.md, as the harness does for a real run."""

import argparse
import json
import time
from pathlib import Path

from bench import report
from bench.harness import __main__ as harness
from bench.harness import results, slo
from bench.simulator import scale
from bench.simulator.run import Scenario, Simulation
from straightline_placer.algorithm import Platform, Rule
from straightline_placer.policy import Policy

OBJECTIVE_S = 0.3
POLICIES = harness.POLICIES  # the same seven, by the same policy fields


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator", description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0, help="virtual time of the trace")
    parser.add_argument("--low-rps", type=float, default=2000.0)
    parser.add_argument("--peak-rps", type=float, default=10000.0)
    parser.add_argument("--spikes", type=float, default=1.4, help="a spike's rate multiple")
    parser.add_argument("--scale", type=int, default=1, help="times the 20 Flask / 50 Docker")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--images", default=str(harness.DEFAULT_IMAGES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=report.RESULTS / "simulation")
    args = parser.parse_args(argv)
    policies = [p for p in args.policies.split(",") if p]
    if set(policies) - set(POLICIES):
        parser.error(f"--policies: choose from {', '.join(POLICIES)}")
    arrivals = scale.arrivals(args.seconds, args.low_rps, args.peak_rps, args.spikes, args.seed)
    sizes = scale.sizes(Path(args.images), len(arrivals), args.seed)
    configs = scale.platforms(args.scale)
    scenario = Scenario(configs, tuple(arrivals), tuple(sizes))
    costing = slo.Costing({c.platform.name.lower(): c.environments * c.slots for c in configs})
    objective = results.Objective(OBJECTIVE_S * 1e3, costing)
    runs, timings = {}, {}
    for policy in policies:
        started = time.perf_counter()
        records = Simulation(scenario, _policy(policy), args.seed).run()
        timings[policy] = round(time.perf_counter() - started, 1)
        runs[policy] = harness.summarise(records, [], 10.0, objective)
        print(f"{policy}: {len(records)} requests in {timings[policy]} s")
        print(f"  {json.dumps(runs[policy]['summary'])[:400]}")
    outcome = {
        "model": "xception",
        "testbed": "remote-serverless",
        "simulated": True,
        "capacity": {"physical": {"limit_rps": round(scale.local_capacity_rps(configs), 1)}},
        "phases": f"diurnal {args.low_rps:g}-{args.peak_rps:g} rps over {args.seconds:g} s, "
        f"spikes x{args.spikes:g}, seed {args.seed}",
        "objective_ms": objective.latency_ms,
        "costing": costing.as_json(),
        "platforms": [vars(c) | {"platform": c.platform.name.lower()} for c in configs],
        "seconds_per_policy": timings,
        "machine": report.machine(),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    harness.save(outcome, args.out)
    (args.out / "tables.md").write_text(harness.table(outcome) + "\n")
    print((args.out / "tables.md").read_text())
    return 0


def _policy(name: str) -> Policy:
    """The harness's policy fields (protobuf values) as the placer's Policy."""
    fields = POLICIES[name]
    pinned = fields["pinned_platform"]
    return Policy(
        latency_objectives={"model": OBJECTIVE_S},
        placement_rule=Rule(fields["placement_rule"]),
        pinned_platform=Platform(pinned) if pinned else None,
        fallback_enabled=fields["fallback_enabled"],
    )


if __name__ == "__main__":
    raise SystemExit(main())

"""The paper's figures from the runs of one model: failure rate against total sessions
(Figures 4a, 5a, 6, 7), session length and response time over the run (4b-c, 5b-c, 8),
StraightLine's placements over time with each platform's response time, and (issue 14) SLO
attainment and cost per 1,000 requests over the run."""

from pathlib import Path

PLATFORM_COLOURS = {"flask": "tab:blue", "docker": "tab:orange", "serverless": "tab:green"}
# Policies that place by a rule rather than pinning one platform.
PLACING_POLICIES = ("straightline", "capacity-aware", "latency-aware", "slo-aware")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(
    model: str, runs: dict[str, dict], out: Path, objective_ms: float | None = None
) -> list[Path]:
    """`runs`: policy -> {"over_time": [...], ...}; returns the files written."""
    plt = _pyplot()
    written = []
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for policy, run in runs.items():
        rows = run["over_time"]
        axes[0].plot(
            [r["sessions_so_far"] for r in rows],
            [r["failure_rate"] for r in rows],
            marker=".",
            label=policy,
        )
        starts = [r["start_s"] for r in rows]
        axes[1].plot(starts, [r["session_ms"]["median"] for r in rows], label=policy)
        axes[2].plot(starts, [r["response_ms"]["p95"] for r in rows], label=policy)
    axes[0].set(
        title="failure rate vs total sessions", xlabel="sessions sent", ylabel="failure rate"
    )
    axes[1].set(title="session length (median)", xlabel="s into the run", ylabel="ms")
    axes[2].set(title="response time (p95)", xlabel="s into the run", ylabel="ms")
    for axis in axes[1:]:
        axis.set_yscale("log")
    for axis in axes:
        axis.legend()
    figure.suptitle(f"{model}: StraightLine against single platforms")
    figure.tight_layout()
    written.append(_save(figure, out / f"{model}-policies.png", plt))

    for policy in PLACING_POLICIES:
        if policy in runs:
            written.append(_placements(model, policy, runs[policy]["over_time"], out, plt))
    if objective_ms is not None:
        written.append(_slo(model, runs, objective_ms, out, plt))
    return written


def _slo(model: str, runs: dict[str, dict], objective_ms: float, out: Path, plt) -> Path:
    """SLO attainment and cost per 1,000 requests per bin, every policy."""
    figure, (attained, cost) = plt.subplots(1, 2, figsize=(14, 4.5))
    for policy, run in runs.items():
        rows = run["over_time"]
        rates = [r["rate_rps"] for r in rows]
        attained.plot(rates, [r.get("slo_attainment") for r in rows], marker=".", label=policy)
        cost.plot(rates, [r.get("cost_per_1000_usd") for r in rows], marker=".", label=policy)
    attained.set(
        title=f"{model}: answered within {objective_ms:g} ms (failures are misses)",
        xlabel="requests/s offered",
        ylabel="SLO attainment",
        ylim=(0, 1.02),
    )
    cost.set(title="cost per 1,000 requests", xlabel="requests/s offered", ylabel="US dollars")
    for panel in (attained, cost):
        panel.legend()
    figure.tight_layout()
    return _save(figure, out / f"{model}-slo.png", plt)


def _placements(model: str, policy: str, rows: list[dict], out: Path, plt) -> Path:
    """Where a placing policy put the answered requests per bin, and each platform's p95."""
    starts = [r["start_s"] for r in rows]
    figure, (axis, latency) = plt.subplots(1, 2, figsize=(14, 4.5))
    bottom = [0.0] * len(rows)
    for platform, colour in PLATFORM_COLOURS.items():
        heights = [r["served"].get(platform, 0) for r in rows]
        axis.bar(
            starts,
            heights,
            width=rows[1]["start_s"] - rows[0]["start_s"] if len(rows) > 1 else 1,
            bottom=bottom,
            align="edge",
            color=colour,
            label=platform,
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        p95 = [r["response_ms_by_platform"].get(platform, {}).get("p95") for r in rows]
        latency.plot(starts, p95, marker=".", color=colour, label=platform)
    axis.set(
        title=f"{model}: {policy}'s placements",
        xlabel="s into the run",
        ylabel="requests answered per bin",
    )
    latency.set(
        title="response time per platform (p95)", xlabel="s into the run", ylabel="ms", yscale="log"
    )
    for panel in (axis, latency):
        panel.legend()
    figure.tight_layout()
    suffix = "" if policy == "straightline" else f"-{policy}"
    return _save(figure, out / f"{model}-placements{suffix}.png", plt)


def _save(figure, path: Path, plt) -> Path:
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

"""Writing benchmark results: JSON beside the scripts, a section of BENCHMARKS.md."""

import json
import os
import platform
import statistics
import threading
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "opentelemetry-sdk": metadata.version("opentelemetry-sdk"),
    }


def run_together(target, count: int) -> float:
    """Runs `target(i)` on `count` threads at once; the seconds until the last has ended."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def p99_of(ordered: list[float]) -> float:
    """The 99th percentile of samples sorted in ascending order (at least one)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def summary(samples_s: list[float]) -> dict:
    """Median and 99th percentile, in microseconds."""
    ordered = sorted(samples_s)
    p99 = p99_of(ordered)
    return {
        "n": len(ordered),
        "median_us": round(statistics.median(ordered) * 1e6, 2),
        "p99_us": round(p99 * 1e6, 2),
    }


def write(name: str, results: dict, markdown: str) -> None:
    """Saves `results` as bench/results/<name>.json and replaces the <name> section of
    BENCHMARKS.md with `markdown`."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    section = f"{start}\n{markdown.strip()}\n{end}"
    if start in text:
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    BENCHMARKS.write_text(text)

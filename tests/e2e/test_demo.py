"""The README's main command runs to the end: train, verify, (package,) deploy, a mixed
stream placed on every platform, and nothing left behind."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def straightline_containers_and_images():
    try:
        import docker

        engine = docker.from_env()
        engine.ping()
    except Exception:
        return set(), set()
    try:
        containers = {
            c.name
            for c in engine.containers.list(
                all=True, filters={"label": "straightline.role"}, ignore_removed=True
            )
        }
        images = {t for i in engine.images.list("straightline/*") for t in i.tags if ":demo-" in t}
        return containers, images
    finally:
        engine.close()


def run_demo(environment: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.demo"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "trained demo:1" in out and "passed: True" in out
    for branch in ("FLASK_AVAILABLE", "LARGE_DATA", "HIGH_FREQUENCY_SMALL_DATA"):
        assert f"BRANCH_{branch}" in out
    return out


def summary_of(out: str) -> str:
    summary = out[out.index("platform     requests") :]
    assert "\nflask " in summary and "\nserverless " in summary
    assert "\nfailed " not in summary
    return summary


@pytest.mark.slow
@pytest.mark.tensorflow
def test_the_demo_runs_to_the_end():
    before = straightline_containers_and_images()
    out = run_demo(dict(os.environ))
    summary = summary_of(out)
    if "Docker engine and images found" in out:
        assert "\ndocker " in summary and "docker: straightline/model-server:demo-1" in out
    assert straightline_containers_and_images() == before


@pytest.mark.slow
@pytest.mark.tensorflow
def test_the_demo_runs_on_a_machine_without_docker(tmp_path):
    """The embedded default: with no engine to reach, Flask and Lambda run as local
    processes and large requests, which would go to Docker, fall back."""
    before = straightline_containers_and_images()
    no_engine = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    out = run_demo(no_engine)
    assert out.startswith("no Docker engine (or no images)")
    summary = summary_of(out)
    assert "\ndocker " not in summary
    serverless_row = next(line for line in summary.splitlines() if line.startswith("serverless"))
    assert int(serverless_row.split()[-1]) >= 1  # the large requests fell back
    assert straightline_containers_and_images() == before

"""The compose stack (deploy/compose.host.yaml: host networking, everything on 127.0.0.1) from
up to down: train a tiny model through the devrunner (a job container; one trace per job),
verify and package it, send requests that reach all three platforms, follow one trace per
request through placer, adapter and model server (an OTLP receiver of the tests' own stands
in for Jaeger), and leave nothing behind."""

import re
import subprocess
import time
from pathlib import Path

import pytest
from opentelemetry import trace

from scripts.localstack import serving_reports, set_policy
from straightline.v1 import devrunner_pb2 as S
from straightline.v1 import devrunner_pb2_grpc, placer_pb2, placer_pb2_grpc, types_pb2
from straightline_common import tls
from straightline_common.telemetry import metadata_with_context
from tests.support.deployed import DeployedStack
from tests.support.otlp import assert_job_trace

pytestmark = [pytest.mark.docker, pytest.mark.compose]
ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "deploy" / "compose.host.yaml"
SERVICES = ["placer", "placer-2", "devrunner", "adapter-flask", "adapter-docker"]
SERVICES += ["adapter-serverless"]
PLATFORMS = {
    types_pb2.PLATFORM_FLASK: "straightline-adapter-flask",
    types_pb2.PLATFORM_DOCKER: "straightline-adapter-docker",
    types_pb2.PLATFORM_SERVERLESS: "straightline-adapter-serverless",
}


class Stack(DeployedStack):
    def __init__(self, tmp_path: Path, otlp_port: int, command: list[str]):
        super().__init__(tmp_path, otlp_port)
        self.command = command
        self.env["COMPOSE_PROJECT_NAME"] = f"straightline-test-{self.suffix}"

    def compose(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [*self.command, "-f", str(COMPOSE_FILE), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"compose {args} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def logs(self) -> str:
        return self.compose("logs", "--no-color")


@pytest.fixture
def stack(tmp_path, otlp_receiver, compose_command, monkeypatch):
    import docker

    otlp_port = int(otlp_receiver.endpoint.rsplit(":", 1)[1])
    stack = Stack(tmp_path, otlp_port, compose_command)
    engine = docker.from_env()
    try:
        stack.compose("up", "-d", *SERVICES)
        stack.call_as_operator(monkeypatch)
        yield stack
    finally:
        logs = stack.logs()
        stack.compose("down", "-v", "-t", "30", "--remove-orphans")
        left = engine.containers.list(
            all=True, filters={"label": ["straightline.role"]}, ignore_removed=True
        )
        ours = [
            c
            for c in left
            if c.labels.get("straightline.owner", "").endswith("-compose")
            or c.labels.get("straightline.role") == "job"
        ]
        for container in ours:
            container.remove(force=True)
        engine.close()
        assert not ours, f"containers left behind: {[c.name for c in ours]}\n{logs[-3000:]}"


def run_job(stub, spec: S.JobSpec, timeout: float = 600) -> S.Job:
    job = stub.SubmitJob(S.SubmitJobRequest(spec=spec), timeout=30).job
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetJob(S.GetJobRequest(job_id=job.job_id)).job
        if job.state in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            assert job.state == S.JOB_STATE_SUCCEEDED, job.message
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job.job_id} did not finish: {job}")


@pytest.mark.timeout(1800)
def test_the_whole_stack_trains_packages_and_serves_with_one_trace_per_request_and_the_demo(
    stack, otlp_receiver, channels
):
    stack.wait_healthy()
    devrunner = devrunner_pb2_grpc.DevRunnerServiceStub(
        channels(stack.address("DEVRUNNER"), tls=stack.operator)
    )
    trained = run_job(
        devrunner,
        S.JobSpec(
            train=S.TrainSpec(
                dataset_path="colours",
                model_name="colours",
                input_size=71,
                epochs=1,
                batch_size=8,
            ),
            resources=S.Resources(allow_cpu_fallback=True),
        ),
    )
    assert trained.runner == S.RUNNER_DOCKER and trained.model.name == "colours"
    assert_job_trace(otlp_receiver, trained.trace_id, ("fit", "save"), epochs=1)
    verified = run_job(
        devrunner,
        S.JobSpec(
            verify=S.VerifySpec(
                model=trained.model,
                dataset_path="colours",
                accuracy_threshold=0.8,
            )
        ),
    )
    assert verified.passed, verified.results
    assert_job_trace(otlp_receiver, verified.trace_id, ("load_model", "evaluate"))
    assert trained.trace_id != verified.trace_id
    packaged = run_job(devrunner, S.JobSpec(package=S.PackageSpec(model=trained.model)))
    try:
        assert set(packaged.images) == {"docker", "serverless"}
        placer = placer_pb2_grpc.PlacerServiceStub(
            channels(stack.address("PLACER"), tls=stack.operator)
        )
        serving_reports(placer, "colours", 3, timeout=60)
        live_view = stack.compose(
            "exec",
            "-T",
            *("-u", "0"),  # the operator's key is root's
            *(
                "-e",
                f"{tls.CERT_ENV}={stack.operator.cert}",
                "-e",
                f"{tls.KEY_ENV}={stack.operator.key}",
            ),
            "placer",
            "straightline-placerctl",
            "--placer",
            stack.address("PLACER"),
            "instances",
        )  # the placer image carries its command line
        for platform_name in ("flask", "docker", "serverless"):
            assert re.search(rf"^\S+ +{platform_name} +127\.0\.0\.1:", live_view, re.MULTILINE)
        picture = next((stack.datasets / "colours" / "red").iterdir()).read_bytes()
        for platform, adapter_service in PLATFORMS.items():
            set_policy(placer, pinned_platform=platform)
            with trace.get_tracer("test").start_as_current_span("client") as client:
                answer = placer.Infer(
                    placer_pb2.InferRequest(
                        model=types_pb2.ModelRef(name="colours"),
                        payload=picture,
                        content_type="image/png",
                    ),
                    metadata=metadata_with_context(),
                    timeout=180,
                )
            assert answer.served_platform == platform and answer.classes
            assert_one_trace(
                otlp_receiver,
                format(client.get_span_context().trace_id, "032x"),
                adapter_service,
                platform,
            )
        # The policy changed at run time (pinned to serverless, last) survives a restart.
        stack.compose("restart", "-t", "10", "placer")
        stack.wait_healthy()
        restored = placer.GetPolicy(
            placer_pb2.GetPolicyRequest(), timeout=30, wait_for_ready=True
        ).policy
        assert restored.pinned_platform == types_pb2.PLATFORM_SERVERLESS
        serving_reports(placer, "colours", 3, timeout=60)  # the adapters came back
    finally:
        import docker

        engine = docker.from_env()
        for image in packaged.images.values():
            engine.images.remove(image)
        engine.close()

    stack.run_demo()


def assert_one_trace(otlp_receiver, trace_id, adapter_service, platform):
    """placer (Infer, with the placement as a child) -> adapter (Predict) -> model server or
    Lambda handler (with decode and inference inside)."""
    serving = (
        "straightline-lambda"
        if platform == types_pb2.PLATFORM_SERVERLESS
        else ("straightline-modelserver")
    )
    names = {
        "model.infer",
        "straightline.v1.InferenceService/Predict",
        "placer.place",
        "placer.forward",
        "straightline.v1.PlacerService/Infer",
    }
    spans = otlp_receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.name in names, count=len(names), timeout=30
    )
    assert {s.name for s in spans} == names
    by_id = {s.span_id: s for s in otlp_receiver.spans if s.trace_id == trace_id}

    def chain(span):
        while span is not None:
            yield span
            span = by_id.get(span.parent_span_id)

    infer = next(s for s in spans if s.name == "model.infer")
    services = [s.service for s in chain(infer)]
    assert services[0] == serving
    assert adapter_service in services and "straightline-placer" in services
    assert services.index(serving) < services.index(adapter_service)
    assert services.index(adapter_service) < services.index("straightline-placer")
    placed = next(s for s in spans if s.name == "placer.place")
    assert placed.attributes["straightline.branch"] == "pinned"
    assert placed.service == "straightline-placer"

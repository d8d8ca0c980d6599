"""The main job: StraightLine's whole life of a model, end to end, on this machine.

1. Starts the placer and the devrunner as local processes (the embedded default).
2. Makes a small image set (three colours), trains Keras Xception on it with the devrunner
   (local runner: the trainer as a process), and verifies the model.
3. Deploys it: with a Docker engine and the images (make images), packages it into its own
   model-server and Lambda images and serves it from Flask, Docker containers and Lambda
   containers under the Runtime Interface Emulator; without, from Flask and Lambda
   environments as local processes (no Docker platform).
4. Sends a mixed stream (small and large images, a quiet phase then a burst), printing where
   each request went, the branch of Algorithm 1, the latency and the trace id; then a summary
   per platform. Stops everything it started.

    python -m scripts.demo               # make demo
    python -m scripts.demo --compose     # against the compose stack (deploy/compose*.yaml)

With --compose it starts nothing: it trains, verifies and packages through the stack's
devrunner (the image set goes under $STRAIGHTLINE_DATASETS, which the devrunner mounts) and
sends the stream to the stack's placer, whose frequency window it sets to 2 s (the phases last
seconds); ports from deploy/.env (or the same variables in the environment), the tokens from
the stack's tokens file ($STRAIGHTLINE_TOKENS_FILE).
"""

import argparse
import io
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from google.protobuf import duration_pb2
from PIL import Image

from scripts import demo_stream, localstack
from straightline.v1 import devrunner_pb2 as S
from straightline.v1 import devrunner_pb2_grpc, placer_pb2_grpc, types_pb2
from straightline_common import devcerts, tls
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.telemetry import configure_tracing
from straightline_devrunner import cli

ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
MODEL_NAME = "demo"
IMAGES = ("straightline/model-server:dev", "straightline/lambda:dev")


# Images --------------------------------------------------------------------------------


def coloured_image(colour, side: int, rng, fmt: str) -> bytes:
    """A noisy image of one dominant colour; PNG noise is large, JPEG small."""
    noise = rng.integers(-60, 60, (side, side, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def make_dataset(root: Path, per_class: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(coloured_image(colour, 48, rng, "PNG"))
    return root


def request_images() -> dict[str, list[tuple[bytes, str]]]:
    """Small JPEGs (a few KB) and large PNGs (about 1 MB, over D) of the three colours."""
    rng = np.random.default_rng(1)
    return {
        "small": [(coloured_image(c, 96, rng, "JPEG"), "image/jpeg") for c in COLOURS.values()],
        "large": [(coloured_image(c, 600, rng, "PNG"), "image/png") for c in COLOURS.values()],
    }


# The model's life ----------------------------------------------------------------------


def run_job(stub, spec: S.JobSpec) -> S.Job:
    job = stub.SubmitJob(S.SubmitJobRequest(spec=spec)).job
    finished = cli.watch(stub, job)
    if finished.state != S.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"the {S.JobKind.Name(job.kind)} job failed: {finished.message}")
    return finished


def develop(devrunner_address: str, dataset: str, package: bool) -> S.Job:
    """Train, verify and (with an engine) package; returns the package job, or the
    verification when there is nothing to package."""
    with open_channel(devrunner_address, Role.OPERATOR) as channel:
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channel)
        print(f"\n== training {MODEL_NAME} (Keras Xception, 71 px, 3 classes) ==")
        trained = run_job(
            stub,
            S.JobSpec(
                train=S.TrainSpec(
                    dataset_path=dataset,
                    model_name=MODEL_NAME,
                    input_size=71,
                    epochs=2,
                    batch_size=8,
                ),
                resources=S.Resources(allow_cpu_fallback=True),
            ),
        )
        model = trained.model
        print(f"trained {model.name}:{model.version}, job trace {trained.trace_id}")
        print("\n== verifying ==")
        verified = run_job(
            stub,
            S.JobSpec(verify=S.VerifySpec(model=model, dataset_path=dataset, accuracy_threshold=0)),
        )
        print(f"accuracy {verified.results['accuracy']:.3f}, passed: {verified.passed}")
        if not package:
            return verified
        print("\n== packaging (the paper's container customization) ==")
        packaged = run_job(stub, S.JobSpec(package=S.PackageSpec(model=model)))
        for platform, image in sorted(packaged.images.items()):
            print(f"{platform}: {image}")
        return packaged


def docker_ready() -> bool:
    try:
        import docker

        engine = docker.from_env()
        try:
            for image in IMAGES:
                engine.images.get(image)
        finally:
            engine.close()
        return True
    except Exception:
        return False


def platform_arguments(images: dict[str, str]) -> dict[str, list[str]]:
    """Each adapter's arguments: the packaged images when there are some, else local
    processes; Lambda environments kept warm (provisioned), as the Docker container."""
    if not images:
        return {
            "flask": ["--threads", "2"],
            "serverless": ["--runner", "process", "--concurrency", "3", "--min-warm", "3"],
        }
    packaged = ("--models-in-image", "true")
    return {
        "flask": ["--threads", "2"],
        "docker": [
            *("--image", images["docker"], *packaged),
            *("--max-containers", "1", "--threads-per-container", "2", "--min-warm", "1"),
        ],
        "serverless": [
            *("--image", images["serverless"], *packaged),
            *("--concurrency", "3", "--min-warm", "3"),
        ],
    }


def remove_images(tags) -> None:
    import docker

    engine = docker.from_env()
    try:
        for tag in tags:
            engine.images.remove(tag, force=True)
    finally:
        engine.close()


def stream(placer_address: str, seed: int, instances: int) -> None:
    with open_channel(placer_address, Role.OPERATOR) as channel:
        stub = placer_pb2_grpc.PlacerServiceStub(channel)
        images = request_images()
        reports = localstack.serving_reports(stub, MODEL_NAME, instances)
        localstack.warm_up(stub, MODEL_NAME, reports, images["small"][0])
        # The phases last seconds, so f_t is counted over 2 s rather than the default 10 s.
        policy = localstack.set_policy(stub, frequency_window=duration_pb2.Duration(seconds=2))
        print(
            f"\n== requests: F = {policy.frequency_threshold_rps} requests/s over "
            f"{policy.frequency_window.seconds} s, "
            f"D = {policy.data_size_threshold_bytes:,} bytes =="
        )
        model = types_pb2.ModelRef(name=MODEL_NAME)
        outcomes = demo_stream.run_phases(stub, model, images, seed)
    demo_stream.print_summary(outcomes)  # requests refused under load are an outcome, not a fault


# Modes ---------------------------------------------------------------------------------


def use_certificate(certs: Path, identity: str) -> None:
    """This process's TLS identity, for its channels and health checks."""
    os.environ[tls.CERT_ENV] = str(certs / f"{identity}.pem")
    os.environ[tls.KEY_ENV] = str(certs / f"{identity}.key")
    os.environ[tls.CA_ENV] = str(certs / "ca.pem")


def embedded(seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="straightline-demo-") as scratch, ExitStack() as stack:
        workdir = Path(scratch)
        # Mutual TLS end to end: a CA and a certificate per service in the scratch directory;
        # this process calls as the operator.
        certs = workdir / "certs"
        devcerts.make_all(certs, days=1)
        use_certificate(certs, "operator")
        store = workdir / "models"
        with_docker = docker_ready()
        print(
            "Docker engine and images found: the Docker and serverless platforms run containers"
            if with_docker
            else "no Docker engine (or no images): Flask and local Lambda processes only"
        )
        placer = localstack.start_placer(stack, workdir, *localstack.tls_arguments(certs, "placer"))
        print(f"placer on {placer.address}, metrics on :{placer.ports['metrics']}/metrics")
        devrunner = localstack.start_service(
            stack,
            "straightline_devrunner",
            [
                *("--listen", "127.0.0.1:0", "--runner", "local"),
                *("--store", str(store), "--state", str(workdir / "jobs.db")),
                *("--datasets", str(workdir)),
                *localstack.tls_arguments(certs, "devrunner"),
            ],
            workdir / "devrunner",
        )
        print(f"devrunner on {devrunner.address} (local runner)")
        make_dataset(workdir / "colours")
        developed = develop(devrunner.address, "colours", package=with_docker)
        images = dict(developed.images)
        if images:
            stack.callback(remove_images, images.values())
        print("\n== deploying ==")
        adapters = platform_arguments(images)
        instances = localstack.start_adapters(
            stack, placer.address, store, workdir, adapters, certs
        )
        stream(placer.address, seed, instances)


def compose_settings() -> dict[str, str]:
    settings = {}
    for line in (ROOT / "deploy" / ".env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[key.strip()] = os.environ.get(key.strip(), value.strip())
    return settings


def against_compose(seed: int) -> None:
    settings = compose_settings()
    # The stack's certificates (deploy/compose.services.yaml makes them); this process is
    # its operator.
    use_certificate(Path(settings["STRAIGHTLINE_CREDENTIALS"]) / "certs", "operator")
    datasets = Path(settings["STRAIGHTLINE_DATASETS"])
    dataset = make_dataset(Path(tempfile.mkdtemp(prefix="straightline-demo-", dir=datasets)))
    try:
        packaged = develop(f"127.0.0.1:{settings['DEVRUNNER_PORT']}", dataset.name, True)
    finally:
        shutil.rmtree(dataset)
    try:
        placers = f"127.0.0.1:{settings['PLACER_PORT']},127.0.0.1:{settings['PLACER_2_PORT']}"
        stream(placers, seed, 3)  # balanced over both placers
    finally:
        remove_images(packaged.images.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--compose", action="store_true", help="use the running compose stack")
    args = parser.parse_args()
    configure_tracing("straightline-demo")
    (against_compose if args.compose else embedded)(args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

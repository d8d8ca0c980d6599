"""Evaluation run of the devrunner (issue 4): train and verify Keras Xception on a subset of
the paper's image set through the real service (local runner), then record the learning
curves, the accuracy and the time per epoch.

    python -m bench.devrunner_eval [--dataset ../shared/datasets/animals4] [--per-class 500]

The subset is symbolic links in a temporary directory (the images are never copied): the
first `--per-class` images of each class (after a seeded shuffle) to train on, with the
paper's validation split of 0.2; the next `--held-out` images of each class to verify on.
The default size (500 per class at 96 px) is what two cores train in under 30 minutes.
"""

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from bench import report
from straightline.v1 import devrunner_pb2 as S
from straightline.v1 import devrunner_pb2_grpc
from straightline_common.auth import Role
from straightline_common.channels import open_channel
from straightline_common.processes import ServiceProcess
from straightline_common.timeconv import seconds
from straightline_devrunner import cli

CURVES = report.RESULTS / "devrunner_eval_curves.png"


def link_subsets(dataset: Path, into: Path, per_class: int, held_out: int, seed: int):
    """Two image sets of links into `dataset`: training and held-out, disjoint."""
    training, verification = into / "train", into / "held-out"
    for folder in sorted(p for p in dataset.iterdir() if p.is_dir()):
        images = sorted(folder.iterdir())
        random.Random(seed).shuffle(images)
        for target, chosen in (
            (training, images[:per_class]),
            (verification, images[per_class : per_class + held_out]),
        ):
            (target / folder.name).mkdir(parents=True)
            for image in chosen:
                (target / folder.name / image.name).symlink_to(image.resolve())
    return training, verification


def count_images(dataset: Path) -> int:
    return sum(1 for folder in dataset.iterdir() if folder.is_dir() for _ in folder.iterdir())


def run_job(stub, spec: S.JobSpec) -> S.Job:
    job = stub.SubmitJob(S.SubmitJobRequest(spec=spec)).job
    finished = cli.watch(stub, job)
    if finished.state != S.JOB_STATE_SUCCEEDED:
        raise SystemExit(
            f"job {job.job_id} ended {S.JobState.Name(finished.state)}: {finished.message}"
        )
    return finished


def evaluate(args, workdir: Path) -> dict:
    training, held_out = link_subsets(
        Path(args.dataset), workdir / "data", args.per_class, args.held_out, args.seed
    )
    devrunner = start_local_devrunner(workdir)
    try:
        channel = open_channel(devrunner.wait_ready(60).address, Role.OPERATOR)
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channel)
        started = time.monotonic()
        trained = run_job(stub, training_job(args, training))
        training_s = time.monotonic() - started
        verified = run_job(stub, verify_job(args, trained.model, held_out))
        channel.close()
    finally:
        devrunner.terminate(60)
    cli.save_curves(trained, str(CURVES))
    return summary(args, trained, training_s, verified)


def start_local_devrunner(workdir: Path) -> ServiceProcess:
    return ServiceProcess(
        "straightline_devrunner",
        [
            "--listen",
            "127.0.0.1:0",
            "--runner",
            "local",
            "--datasets",
            str(workdir / "data"),
            "--store",
            str(workdir / "models"),
            "--state",
            str(workdir / "jobs.sqlite"),
        ],
        workdir,
    )


def training_job(args, dataset: Path) -> S.JobSpec:
    return S.JobSpec(
        train=S.TrainSpec(
            dataset_path=dataset.name,
            model_name="animals",
            input_size=args.input_size,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
        ),
        resources=S.Resources(allow_cpu_fallback=True),
    )


def verify_job(args, model, dataset: Path) -> S.JobSpec:
    return S.JobSpec(
        verify=S.VerifySpec(
            model=model, dataset_path=dataset.name, accuracy_threshold=args.threshold
        ),
        resources=S.Resources(allow_cpu_fallback=True),
    )


PARAMETERS = ("per_class", "held_out", "input_size", "epochs", "batch_size", "seed", "threshold")


def summary(args, trained: S.Job, training_s: float, verified: S.Job) -> dict:
    epoch_seconds = [seconds(e.elapsed) for e in trained.epochs]
    return {
        "machine": report.machine(),
        "parameters": {k: getattr(args, k) for k in PARAMETERS},
        "classes": 4,
        "dataset_images": count_images(Path(args.dataset)),
        "training_images": args.per_class * 4,
        "held_out_images": args.held_out * 4,
        "training_wall_s": round(training_s, 1),
        "first_epoch_s": round(epoch_seconds[0], 1),
        "later_epoch_median_s": round(statistics.median(epoch_seconds[1:]), 1),
        "epochs": [
            {
                "epoch": e.epoch,
                "loss": e.loss,
                "accuracy": e.accuracy,
                "val_loss": e.val_loss,
                "val_accuracy": e.val_accuracy,
                "seconds": round(seconds(e.elapsed), 2),
            }
            for e in trained.epochs
        ],
        "verification": {
            "accuracy": verified.results["accuracy"],
            "loss": verified.results["loss"],
            "passed": verified.passed,
        },
    }


def markdown(results: dict) -> str:
    p, last = results["parameters"], results["epochs"][-1]
    verification = results["verification"]
    outcome = "passed" if verification["passed"] else "failed"
    return f"""## Devrunner evaluation run (issue 4)

`python -m bench.devrunner_eval --per-class {p["per_class"]}`: Keras Xception
(weights=None) trained from scratch by the devrunner (local runner,
{results["machine"]["cores"]} cores, no GPU) on {results["training_images"]} images of
`animals4` ({p["per_class"]} per class, validation split 0.2) at {p["input_size"]} px,
{p["epochs"]} epochs, batch {p["batch_size"]}; verified on {results["held_out_images"]}
other images.

| | value |
| --- | --- |
| training wall time (job submitted to model stored) | {results["training_wall_s"]} s |
| first epoch (includes graph building) | {results["first_epoch_s"]} s |
| later epochs, median | {results["later_epoch_median_s"]} s |
| final training accuracy / loss | {last["accuracy"]:.3f} / {last["loss"]:.3f} |
| final validation accuracy / loss | {last["val_accuracy"]:.3f} / {last["val_loss"]:.3f} |
| held-out accuracy (verify job) | {verification["accuracy"]:.3f} ({outcome} at {p["threshold"]}) |

Learning curves: `bench/results/devrunner_eval_curves.png` (the paper's Figure 3). The paper
reports 99% training and 70-80% validation accuracy after 20 epochs at 299 px on a GPU with
the whole set; this run trains on {results["training_images"]} of the set's
{results["dataset_images"]} images at {p["input_size"]} px, from scratch, in the time a
{results["machine"]["cores"]}-core CPU allows.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default=str(report.ROOT.parent / "shared/datasets/animals4"))
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is reported apart from the rest")
    with tempfile.TemporaryDirectory(prefix="straightline-eval-") as workdir:
        results = evaluate(args, Path(workdir))
    report.write("devrunner_eval", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

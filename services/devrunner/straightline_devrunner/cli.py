"""The devrunner's command line: submit jobs and watch them, list them, plot learning curves.

    python -m straightline_devrunner.cli train --dataset DIR --model-name NAME [--epochs N]
    python -m straightline_devrunner.cli verify --model NAME[:VERSION] --dataset DIR
    python -m straightline_devrunner.cli package --model NAME[:VERSION]
    python -m straightline_devrunner.cli list
    python -m straightline_devrunner.cli curves JOB_ID [--png FILE]

The devrunner's address comes from --devrunner (or STRAIGHTLINE_DEVRUNNER, default
127.0.0.1:50071); the operator's token from the deployment's tokens file (--tokens-file,
$STRAIGHTLINE_TOKENS_FILE, or the one the services wrote for this user).
"""

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import grpc

from straightline.v1 import devrunner_pb2, devrunner_pb2_grpc, types_pb2
from straightline_common.auth import TOKENS_FILE_ENV, Role, load_tokens
from straightline_common.channels import open_channel
from straightline_common.config import argparse_type, parse_non_negative_int
from straightline_common.errors import Unauthenticated

S = devrunner_pb2
_BAR = 24


def _model(text: str) -> types_pb2.ModelRef:
    name, _, version = text.partition(":")
    return types_pb2.ModelRef(name=name, version=version)


def progress_line(
    progress: S.StepProgress, epochs: int, started: float, done_steps: int, total_steps: int
) -> str:
    """One line: epoch, step, a bar, loss, accuracy and time left."""
    filled = int(_BAR * progress.step / max(progress.steps, 1))
    elapsed = time.monotonic() - started
    left = elapsed / max(done_steps, 1) * max(total_steps - done_steps, 0)
    return (
        f"epoch {progress.epoch}/{epochs} step {progress.step}/{progress.steps} "
        f"[{'#' * filled}{'.' * (_BAR - filled)}] loss {progress.loss:.4f} "
        f"acc {progress.accuracy:.3f} left {left:4.0f}s"
    )


def watch(stub: Any, job: S.Job, out: TextIO = sys.stdout) -> S.Job:
    """Follows a job to its end, drawing its progress; returns the finished job."""
    epochs = job.spec.train.epochs or 20
    started, done_steps = time.monotonic(), 0
    for event in stub.WatchJob(S.WatchJobRequest(job_id=job.job_id)):
        which = event.WhichOneof("event")
        if which == "progress":
            done_steps += 1
            total = event.progress.steps * epochs
            out.write("\r" + progress_line(event.progress, epochs, started, done_steps, total))
        elif which == "epoch":
            e = event.epoch
            out.write(
                f"\repoch {e.epoch}/{e.epochs}: loss {e.loss:.4f} acc {e.accuracy:.3f} "
                f"val_loss {e.val_loss:.4f} val_acc {e.val_accuracy:.3f}{' ' * 30}\n"
            )
        elif which == "state_change":
            out.write(
                f"{S.JobState.Name(event.state_change.state).removeprefix('JOB_STATE_')}"
                f" {event.state_change.message}\n"
            )
        out.flush()
    finished: S.Job = stub.GetJob(S.GetJobRequest(job_id=job.job_id)).job
    return finished


def table(jobs: Iterable[S.Job]) -> str:
    rows = [("JOB", "KIND", "STATE", "MODEL", "RESULT", "CREATED")]
    for job in jobs:
        result = (
            f"passed={job.passed} acc={job.results.get('accuracy', 0):.3f}"
            if job.kind == S.JOB_KIND_VERIFY
            else ", ".join(filter(None, [*job.images.values(), job.model_uri]))
            if job.kind == S.JOB_KIND_PACKAGE
            else f"val_acc={job.results.get('val_accuracy', 0):.3f}"
            if job.results
            else ""
        )
        rows.append(
            (
                job.job_id,
                S.JobKind.Name(job.kind).removeprefix("JOB_KIND_").lower(),
                S.JobState.Name(job.state).removeprefix("JOB_STATE_").lower(),
                f"{job.model.name}:{job.model.version}" if job.model.name else "-",
                result,
                job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def save_curves(job: S.Job, path: str) -> None:
    """Accuracy and loss per epoch, training and validation: the paper's Figure 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in job.epochs]
    figure, (accuracy, loss) = plt.subplots(1, 2, figsize=(10, 4))
    accuracy.plot(epochs, [e.accuracy for e in job.epochs], label="training")
    accuracy.plot(epochs, [e.val_accuracy for e in job.epochs], label="validation")
    accuracy.set(title="accuracy", xlabel="epoch")
    loss.plot(epochs, [e.loss for e in job.epochs], label="training")
    loss.plot(epochs, [e.val_loss for e in job.epochs], label="validation")
    loss.set(title="loss", xlabel="epoch")
    for axes in (accuracy, loss):
        axes.legend()
    figure.suptitle(f"{job.model.name}:{job.model.version} (job {job.job_id})")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _spec(args: argparse.Namespace) -> S.JobSpec:
    resources = S.Resources(gpus=args.gpus, allow_cpu_fallback=args.cpu_fallback)
    if args.command == "train":
        return S.JobSpec(
            train=S.TrainSpec(
                dataset_path=args.dataset,
                model_name=args.model_name,
                input_size=args.input_size,
                epochs=args.epochs,
                batch_size=args.batch_size,
                k_folds=args.k_folds,
            ),
            resources=resources,
        )
    if args.command == "verify":
        return S.JobSpec(
            verify=S.VerifySpec(
                model=_model(args.model),
                dataset_path=args.dataset,
                accuracy_threshold=args.threshold,
            ),
            resources=resources,
        )
    return S.JobSpec(package=S.PackageSpec(model=_model(args.model)))


COUNT = argparse_type(parse_non_negative_int)  # 0: the devrunner's default


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="straightline-devrunner-cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    main.add_argument(
        "--devrunner", default=os.environ.get("STRAIGHTLINE_DEVRUNNER", "127.0.0.1:50071")
    )
    main.add_argument("--tokens-file", help=f"default: ${TOKENS_FILE_ENV} or the user's own")
    commands = main.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    train.add_argument("--dataset", required=True)
    train.add_argument("--model-name", required=True)
    train.add_argument("--epochs", type=COUNT, default=0)
    train.add_argument("--input-size", type=COUNT, default=0)
    train.add_argument("--batch-size", type=COUNT, default=0)
    train.add_argument("--k-folds", type=COUNT, default=0)
    verify = commands.add_parser("verify")
    verify.add_argument("--model", required=True)
    verify.add_argument("--dataset", required=True)
    verify.add_argument("--threshold", type=float, default=0.5)
    for command in (train, verify):
        command.add_argument("--gpus", type=COUNT, default=0)
        command.add_argument("--cpu-fallback", action="store_true")
    package = commands.add_parser("package")
    package.add_argument("--model", required=True)
    commands.add_parser("list")
    curves = commands.add_parser("curves")
    curves.add_argument("job_id")
    curves.add_argument("--png")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        tokens = load_tokens(Path(args.tokens_file)) if args.tokens_file else None
        channel = open_channel(args.devrunner, Role.OPERATOR, tokens=tokens)
    except Unauthenticated as error:
        print(f"straightline-devrunner-cli: {error}", file=sys.stderr)
        return 2
    with channel:
        stub = devrunner_pb2_grpc.DevRunnerServiceStub(channel)
        try:
            if args.command == "list":
                print(table(stub.ListJobs(S.ListJobsRequest()).jobs))
            elif args.command == "curves":
                job = stub.GetJob(S.GetJobRequest(job_id=args.job_id)).job
                for e in job.epochs:
                    print(
                        f"epoch {e.epoch}: acc {e.accuracy:.3f} val_acc {e.val_accuracy:.3f} "
                        f"loss {e.loss:.4f} val_loss {e.val_loss:.4f}"
                    )
                if args.png:
                    save_curves(job, args.png)
                    print(f"saved {args.png}")
            else:
                job = stub.SubmitJob(S.SubmitJobRequest(spec=_spec(args))).job
                print(f"job {job.job_id} submitted")
                job = watch(stub, job)
                return 0 if job.state == S.JOB_STATE_SUCCEEDED else 1
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

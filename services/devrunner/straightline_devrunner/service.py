"""The devrunner's core: checks and accepts jobs, runs them, records what they report.

Transport-agnostic: the gRPC servicer translates. A train or verify job runs the trainer
(`straightline_devrunner.trainer`) through a runner; its JSON lines become the job's epochs,
progress and result, any other line a log line.
"""

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace

from straightline.v1 import devrunner_pb2, types_pb2
from straightline_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
)
from straightline_common.limits import check_string
from straightline_common.modelstore import ModelStore
from straightline_common.names import inside, shown
from straightline_common.telemetry import environment_with_context
from straightline_common.timeconv import duration, seconds
from straightline_devrunner.jobs import FINISHED, JobStore, now
from straightline_devrunner.runners import Placement

log = logging.getLogger(__name__)
tracer = trace.get_tracer("straightline.devrunner")
MAX_EPOCHS = 10_000
_LAST_LOG_LINES = 20


@dataclass(frozen=True)
class Defaults:
    """Resources by kind: training gets more GPU than verification, as in the paper."""

    train_gpus: int = 1
    verify_gpus: int = 0
    cpus: float = 0.0
    memory_bytes: int = 0
    timeout_s: float = 6 * 3600
    image: str = "straightline/trainer:dev"


class DevRunner:
    def __init__(
        self,
        jobs: JobStore,
        store: ModelStore,
        runner,
        *,
        engine=None,
        datasets: Path,
        allowed_images: frozenset[str],
        defaults: Defaults = Defaults(),
    ):
        self._jobs = jobs
        self._store = store
        self._runner = runner
        self._engine = engine  # for packaging (builds images); None without an engine
        self._datasets = datasets
        self._allowed_images = allowed_images
        self._defaults = defaults
        self._runs: dict[str, object] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    # Requests ----------------------------------------------------------------------------

    def submit(self, spec: devrunner_pb2.JobSpec) -> devrunner_pb2.Job:
        _check_labels(spec.labels)
        kind = _kind_of(spec)
        if kind == devrunner_pb2.JOB_KIND_PACKAGE:
            return self._submit_package(spec)
        image = spec.image or self._defaults.image
        if image not in self._allowed_images:
            raise PermissionDenied(f"image {image!r} is not on the devrunner's allow-list")
        arguments, dataset = self._arguments(kind, spec)
        resources = self._grant(kind, spec.resources)
        job = self._jobs.create(spec, kind)
        job.resources.CopyFrom(resources)
        job.runner = (
            devrunner_pb2.RUNNER_DOCKER
            if self._runner.kind == "docker"
            else devrunner_pb2.RUNNER_LOCAL
        )
        self._jobs.save(job)
        placement = Placement(
            dataset, str(self._store.root), resources.gpus, resources.cpus, resources.memory_bytes
        )
        timeout = seconds(spec.timeout) if spec.HasField("timeout") else self._defaults.timeout_s
        arguments = [*arguments, "--job-id", job.job_id]

        def start_run(on_line):
            return self._runner.start(
                job.job_id, arguments, placement, image, on_line, environment_with_context()
            )

        threading.Thread(
            target=self._run, args=(job.job_id, start_run, timeout), daemon=True
        ).start()
        return job

    def _submit_package(self, spec: devrunner_pb2.JobSpec) -> devrunner_pb2.Job:
        if self._engine is None:
            raise FailedPrecondition(
                "packaging builds images and needs a Docker engine; none "
                "is reachable from this devrunner"
            )
        version = self._store.resolve(spec.package.model.name, spec.package.model.version)
        if not self._verified(version.name, version.version):
            raise FailedPrecondition(
                f"model {version.name}:{version.version} has no passed verification; run a "
                "verify job on it first"
            )
        names = {types_pb2.PLATFORM_DOCKER: "docker", types_pb2.PLATFORM_SERVERLESS: "serverless"}
        wanted = list(spec.package.platforms) or list(names)
        unknown = [p for p in wanted if p not in (*names, types_pb2.PLATFORM_FLASK)]
        if unknown:
            raise InvalidArgument("platforms must be FLASK, DOCKER or SERVERLESS")
        job = self._jobs.create(spec, devrunner_pb2.JOB_KIND_PACKAGE)
        job.model.CopyFrom(types_pb2.ModelRef(name=version.name, version=version.version))
        self._jobs.save(job)
        platforms = [names[p] for p in wanted if p in names]
        threading.Thread(
            target=self._run_package, args=(job.job_id, version, platforms), daemon=True
        ).start()
        return job

    def _verified(self, name: str, version: str) -> bool:
        verifications, _ = self._jobs.page(
            0, 1_000_000, devrunner_pb2.JOB_KIND_VERIFY, devrunner_pb2.JOB_STATE_SUCCEEDED
        )
        return any(
            j.passed and (j.model.name, j.model.version) == (name, version) for j in verifications
        )

    def _run_package(self, job_id: str, version, platforms: list[str]) -> None:
        from straightline_devrunner.packaging import package

        with tracer.start_as_current_span(
            "devrunner.package", attributes={"straightline.job_id": job_id}
        ):
            self._set_state(job_id, devrunner_pb2.JOB_STATE_RUNNING, "building", started=True)
            try:
                images = package(
                    self._engine,
                    version,
                    platforms,
                    on_line=lambda text: self._jobs.append(
                        job_id, log=devrunner_pb2.LogLine(stream="build", text=text)
                    ),
                )
                uri = self._publish(job_id, version)
            except ServiceError as error:
                self._set_state(job_id, devrunner_pb2.JOB_STATE_FAILED, str(error), ended=True)
                return
            job = self._jobs.get(job_id)
            job.images.update(images)
            job.model_uri = uri
            self._jobs.save(job)
            self._set_state(
                job_id,
                devrunner_pb2.JOB_STATE_SUCCEEDED,
                "the version is servable: the model store holds it for Flask, "
                "and its images are built" + (f"; published to {uri}" if uri else ""),
                ended=True,
            )

    def _publish(self, job_id: str, version) -> str:
        """Copies the version to the store's S3 location, if it has one; returns where."""
        if self._store.remote is None:
            return ""
        uri = self._store.publish(version)
        self._jobs.append(
            job_id, log=devrunner_pb2.LogLine(stream="build", text=f"published {uri}")
        )
        return uri

    def get(self, job_id: str) -> devrunner_pb2.Job:
        return self._jobs.get(job_id)

    def list_jobs(self, page_size: int, page_token: str, kind: int, state: int):
        if page_token and not (page_token.isascii() and page_token.isdigit()):
            raise InvalidArgument("page_token is not one this devrunner gave")
        offset = int(page_token or 0)
        size = min(page_size or 50, 1000)
        jobs, more = self._jobs.page(offset, size, kind, state)
        return jobs, str(offset + size) if more else ""

    def cancel(self, job_id: str) -> devrunner_pb2.Job:
        job = self._jobs.get(job_id)
        if job.state in FINISHED:
            raise FailedPrecondition(
                f"job {job_id} has already ended ({devrunner_pb2.JobState.Name(job.state)})"
            )
        with self._lock:
            self._cancelled.add(job_id)
            run = self._runs.get(job_id)
        if run is not None:
            run.stop()
        return self._jobs.get(job_id)

    def watch(self, job_id: str, is_active):
        return self._jobs.follow(job_id, is_active)

    # Running -----------------------------------------------------------------------------

    def _run(self, job_id: str, start_run, timeout_s: float, *, reattached=False) -> None:
        """Runs a job to its end. `start_run(on_line)` starts it (or re-attaches to it) and
        returns the run; whatever happens, the job ends in a final state."""
        lines: list[str] = []
        with tracer.start_as_current_span(
            "devrunner.job",
            attributes={"straightline.job_id": job_id, "straightline.reattached": reattached},
        ) as span:
            if not reattached:
                job = self._jobs.get(job_id)
                job.trace_id = format(span.get_span_context().trace_id, "032x")
                self._jobs.save(job)
            try:
                with self._lock:
                    if job_id in self._cancelled:
                        raise _Ended(devrunner_pb2.JOB_STATE_CANCELLED, "cancelled before start")
                    run = start_run(lambda s, t: self._on_line(job_id, span, s, t, lines))
                    self._runs[job_id] = run
                if not reattached:
                    self._set_state(
                        job_id, devrunner_pb2.JOB_STATE_RUNNING, "running", started=True
                    )
                status = run.wait(timeout_s)
                if status is None:
                    run.stop()
                    run.wait(30)
                    raise _Ended(
                        devrunner_pb2.JOB_STATE_TIMED_OUT,
                        f"the job ran longer than its timeout ({timeout_s:.0f} s)",
                    )
                self._conclude(job_id, status, lines)
            except _Ended as ended:
                self._set_state(job_id, ended.state, ended.message, ended=True)
            except ServiceError as error:
                self._set_state(job_id, devrunner_pb2.JOB_STATE_FAILED, str(error), ended=True)
            except Exception as error:  # a job must end in a state, whatever went wrong
                log.exception("job %s failed inside the devrunner", job_id)
                self._set_state(
                    job_id,
                    devrunner_pb2.JOB_STATE_FAILED,
                    f"the devrunner failed running the job: {error}",
                    ended=True,
                )
            finally:
                with self._lock:
                    self._runs.pop(job_id, None)

    def _conclude(self, job_id: str, status: int, lines: list[str]) -> None:
        job = self._jobs.get(job_id)
        with self._lock:
            cancelled = job_id in self._cancelled
        if cancelled:
            raise _Ended(devrunner_pb2.JOB_STATE_CANCELLED, "cancelled")
        if status != 0 or not job.HasField("model"):
            tail = "\n".join(lines[-_LAST_LOG_LINES:])
            raise _Ended(
                devrunner_pb2.JOB_STATE_FAILED,
                f"the job exited with status {status}; its last lines:\n{tail}",
            )
        self._set_state(job_id, devrunner_pb2.JOB_STATE_SUCCEEDED, "done", ended=True)

    def _on_line(self, job_id: str, span, stream: str, text: str, lines: list[str]) -> None:
        """One line of the job's output: an event of the trainer, or a log line (kept, with
        the trainer's errors, for the message of a failure)."""
        try:
            event = json.loads(text) if text.startswith("{") else None
        except ValueError:
            event = None
        kind = event.pop("event", None) if isinstance(event, dict) else None
        if kind == "epoch":
            epoch = devrunner_pb2.EpochMetrics(
                elapsed=duration(event.pop("elapsed_s", 0.0)), **event
            )
            job = self._jobs.get(job_id)
            job.epochs.append(epoch)
            self._jobs.save(job)
            span.add_event("epoch", {k: v for k, v in event.items() if isinstance(v, int | float)})
            self._jobs.append(job_id, epoch=epoch)
        elif kind == "phase":
            _record_phase(span, event)
        elif kind == "progress":
            self._jobs.append(job_id, progress=devrunner_pb2.StepProgress(**event))
        elif kind == "result":
            self._record_result(job_id, event)
        elif kind != "start":
            lines.append(text)
            del lines[:-_LAST_LOG_LINES]
            self._jobs.append(job_id, log=devrunner_pb2.LogLine(stream=stream, text=text))

    def _record_result(self, job_id: str, result: dict) -> None:
        job = self._jobs.get(job_id)
        job.model.CopyFrom(types_pb2.ModelRef(**result["model"]))
        for key in ("accuracy", "loss"):
            if key in result:
                job.results[key] = result[key]
        for key, value in result.get("metrics", {}).items():
            job.results[key] = value
        if "passed" in result:
            job.passed = result["passed"]
        self._jobs.save(job)

    def _set_state(self, job_id, state, message, *, started=False, ended=False) -> None:
        self._jobs.append(
            job_id, state_change=devrunner_pb2.StateChange(state=state, message=message)
        )
        job = self._jobs.get(job_id)
        job.state, job.message = state, message
        if started:
            job.start_time.CopyFrom(now())
        if ended:
            job.end_time.CopyFrom(now())
        self._jobs.save(job)

    # Checks ------------------------------------------------------------------------------

    def _arguments(self, kind: int, spec: devrunner_pb2.JobSpec) -> tuple[list[str], str]:
        """The trainer's command line for a train or verify job, and the job's dataset."""
        if kind == devrunner_pb2.JOB_KIND_TRAIN:
            return self._train_arguments(spec.train)
        if kind == devrunner_pb2.JOB_KIND_VERIFY:
            return self._verify_arguments(spec.verify)
        raise AssertionError("package jobs do not run the trainer")

    def _train_arguments(self, train: devrunner_pb2.TrainSpec) -> tuple[list[str], str]:
        dataset = self._dataset(train.dataset_path)
        _check_train_ranges(train)
        arguments = [
            "train",
            "--dataset",
            self._dataset_path(dataset),
            "--store",
            self._store_path(),
            "--model-name",
            train.model_name or "model",
        ]
        for flag, value in (
            ("--input-size", train.input_size),
            ("--epochs", train.epochs),
            ("--batch-size", train.batch_size),
            ("--validation-split", train.validation_split),
            ("--learning-rate", train.learning_rate),
            ("--decay-steps", train.decay_steps),
            ("--decay-rate", train.decay_rate),
            ("--k-folds", train.k_folds),
            ("--seed", train.seed),
        ):
            if value:
                arguments += [flag, str(value)]
        return arguments, dataset

    def _verify_arguments(self, verify: devrunner_pb2.VerifySpec) -> tuple[list[str], str]:
        dataset = self._dataset(verify.dataset_path)
        stored = self._store.resolve(verify.model.name, verify.model.version)
        if not 0 <= verify.accuracy_threshold <= 1:  # NaN is not either
            raise InvalidArgument("accuracy_threshold must be in [0, 1]")
        arguments = [
            "verify",
            "--dataset",
            self._dataset_path(dataset),
            "--store",
            self._store_path(),
            "--model",
            f"{stored.name}:{stored.version}",
            "--threshold",
            str(verify.accuracy_threshold),
        ]
        return arguments, dataset

    def _dataset(self, name: str) -> str:
        """The directory of a job's dataset: `name` relative to the datasets root."""
        if not name:
            raise InvalidArgument("dataset_path is empty; name the directory of class folders")
        if os.path.isabs(name):
            raise InvalidArgument(
                "dataset_path must be relative to the devrunner's datasets directory, not absolute"
            )
        check_string("dataset_path", name, 255)
        path = inside(self._datasets, name)
        if not path.is_dir():
            raise NotFound(
                f"dataset {shown(name)} does not exist or is not a directory under the "
                "devrunner's datasets directory"
            )
        return str(path)

    def _dataset_path(self, dataset: str) -> str:
        """Where the job sees its dataset: mounted at /data in a container."""
        return "/data" if self._runner.kind == "docker" else dataset

    def _store_path(self) -> str:
        return "/models" if self._runner.kind == "docker" else str(self._store.root)

    def _grant(self, kind: int, asked: devrunner_pb2.Resources) -> devrunner_pb2.Resources:
        _check_resource_ranges(asked)
        default_gpus = (
            self._defaults.train_gpus
            if kind == devrunner_pb2.JOB_KIND_TRAIN
            else self._defaults.verify_gpus
        )
        gpus = asked.gpus if asked.gpus or asked.allow_cpu_fallback else default_gpus
        if gpus and not self._runner.has_gpus():
            if not asked.allow_cpu_fallback:
                raise FailedPrecondition(
                    f"the job asks for {gpus} GPU(s) and this host has none; set "
                    "resources.allow_cpu_fallback to run it on the CPU"
                )
            gpus = 0
        return devrunner_pb2.Resources(
            gpus=gpus,
            allow_cpu_fallback=asked.allow_cpu_fallback,
            cpus=asked.cpus or self._defaults.cpus,
            memory_bytes=asked.memory_bytes or self._defaults.memory_bytes,
        )

    def recover(self) -> None:
        """After a restart: jobs whose container still exists are re-attached (found by
        label), following its output from the last event recorded; the others (local
        processes died with the devrunner) are marked lost."""
        for job in self._jobs.unfinished():
            container = self._runner.find(job.job_id)
            if container is None:
                self._set_state(
                    job.job_id,
                    devrunner_pb2.JOB_STATE_LOST,
                    "the devrunner restarted while the job ran",
                    ended=True,
                )
                continue
            since = self._jobs.last_event_time(job.job_id)
            timeout = (
                seconds(job.spec.timeout)
                if job.spec.HasField("timeout")
                else self._defaults.timeout_s
            )
            remaining = max(1.0, timeout - (time.time() - job.start_time.seconds))
            log.info("re-attached to a running job", extra={"job_id": job.job_id})
            threading.Thread(
                target=self._run,
                args=(
                    job.job_id,
                    lambda on_line, c=container, t=since: self._runner.attach(c, on_line, t),
                    remaining,
                ),
                kwargs={"reattached": True},
                daemon=True,
            ).start()


class _Ended(Exception):
    def __init__(self, state: int, message: str):
        super().__init__(message)
        self.state, self.message = state, message


def _record_phase(job_span, event: dict) -> None:
    """A phase the trainer timed, as a child span of the job with the trainer's own times."""
    name = event.pop("name", "phase")
    start, end = event.pop("start_s", None), event.pop("end_s", None)
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return
    span = tracer.start_span(
        f"trainer.{name}",
        context=trace.set_span_in_context(job_span),
        start_time=int(start * 1e9),
        attributes={f"straightline.{k}": v for k, v in event.items() if isinstance(v, int)},
    )
    span.end(end_time=int(end * 1e9))


def _kind_of(spec: devrunner_pb2.JobSpec) -> int:
    which = spec.WhichOneof("spec")
    if which is None:
        raise InvalidArgument("the job spec has no train, verify or package part")
    return {
        "train": devrunner_pb2.JOB_KIND_TRAIN,
        "verify": devrunner_pb2.JOB_KIND_VERIFY,
        "package": devrunner_pb2.JOB_KIND_PACKAGE,
    }[which]


def _check_train_ranges(train: devrunner_pb2.TrainSpec) -> None:
    """Every number of a training job within what a training run can use (0: the default);
    a negative number sent as unsigned arrives as a huge one, and NaN is in no range."""
    for name, low, high in _TRAIN_RANGES:
        value = getattr(train, name)
        if value and not low <= value <= high:
            raise InvalidArgument(f"{name} must be between {low} and {high} (or unset)")


def _check_labels(labels) -> None:
    """Labels are kept with the job and listed with it: bounded, so that no job makes a
    ListJobs page too large to send."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument(f"a job has at most {MAX_LABELS} labels")
    for key, value in labels.items():
        check_string("a label's key", key, MAX_LABEL_KEY)
        check_string(f"label {shown(key)}", value, MAX_LABEL_VALUE)


MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE = 32, 63, 256


def _check_resource_ranges(asked: devrunner_pb2.Resources) -> None:
    for name, low, high in _RESOURCE_RANGES:
        value = getattr(asked, name)
        if value and not low <= value <= high:
            raise InvalidArgument(f"resources.{name} must be between {low} and {high} (or unset)")


_RESOURCE_RANGES = (("gpus", 1, 16), ("cpus", 0.01, 1024.0), ("memory_bytes", 2**20, 2**40))
_TRAIN_RANGES = (
    ("input_size", 32, 1024),
    ("epochs", 1, MAX_EPOCHS),
    ("batch_size", 1, 4096),
    ("validation_split", 0.0, 0.9),
    ("learning_rate", 1e-9, 10.0),
    ("decay_steps", 1, 10_000_000),
    ("decay_rate", 1e-9, 1.0),
    ("k_folds", 2, 100),
    ("seed", 0, 2**31 - 1),
)

"""The devrunner's core: accepts jobs, runs them to a final state, re-attaches to them after
a restart. Transport-agnostic (the gRPC servicer translates).

A train or verify job runs the trainer (`trainer.py`) through a runner (`runners.py`); its
spec is checked and turned into the trainer's command line by `specs.py`, and its output
lines become the job's epochs, progress and result in `output.py`. A package job builds
images (`package_jobs.py`)."""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace

from straightline.v1 import devrunner_pb2
from straightline_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ServiceError,
)
from straightline_common.modelstore import ModelStore
from straightline_common.telemetry import environment_with_context
from straightline_common.timeconv import seconds
from straightline_devrunner import specs
from straightline_devrunner.jobs import FINISHED, JobStore
from straightline_devrunner.output import TrainerOutput
from straightline_devrunner.package_jobs import PackageJobs
from straightline_devrunner.runners import JobResources, JobRunner, OnLine, Run

log = logging.getLogger(__name__)
tracer = trace.get_tracer("straightline.devrunner")
_PAGE_SIZE, _MAX_PAGE_SIZE = 50, 1000

StartRun = Callable[[OnLine], Run | None]


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
        runner: JobRunner,
        *,
        engine: Any = None,
        datasets: Path,
        allowed_images: frozenset[str],
        defaults: Defaults = Defaults(),
    ) -> None:
        self._jobs = jobs
        self._store = store
        self._runner = runner
        self._commands = specs.TrainerCommands(datasets, store)
        self._packages = PackageJobs(jobs, store, engine)
        self._allowed_images = allowed_images
        self._defaults = defaults
        self._runs: dict[str, Run] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    # Requests ----------------------------------------------------------------------------

    def submit(self, spec: devrunner_pb2.JobSpec) -> devrunner_pb2.Job:
        specs.check_labels(spec.labels)
        kind = specs.kind_of(spec)
        if kind == devrunner_pb2.JOB_KIND_PACKAGE:
            return self._packages.submit(spec)
        image = spec.image or self._defaults.image
        if image not in self._allowed_images:
            raise PermissionDenied(f"image {image!r} is not on the devrunner's allow-list")
        dataset = self._commands.dataset(kind, spec)
        granted = self._grant(kind, spec.resources)
        resources = JobResources(
            dataset, str(self._store.root), granted.gpus, granted.cpus, granted.memory_bytes
        )
        arguments = self._commands.arguments(kind, spec, *self._runner.job_paths(resources))
        job = self._jobs.create(spec, kind)
        job.resources.CopyFrom(granted)
        job.runner = self._runner.kind
        self._jobs.save(job)
        timeout = seconds(spec.timeout) if spec.HasField("timeout") else self._defaults.timeout_s
        arguments = [*arguments, "--job-id", job.job_id]

        def start_run(on_line: OnLine) -> Run:
            return self._runner.start(
                job.job_id, arguments, resources, image, on_line, environment_with_context()
            )

        self._run_in_background(job.job_id, start_run, timeout, reattached=False)
        return job

    def get(self, job_id: str) -> devrunner_pb2.Job:
        return self._jobs.get(job_id)

    def list_jobs(
        self, page_size: int, page_token: str, kind: int, state: int
    ) -> tuple[list[devrunner_pb2.Job], str]:
        if page_token and not (page_token.isascii() and page_token.isdigit()):
            raise InvalidArgument("page_token is not one this devrunner gave")
        offset = int(page_token or 0)
        size = min(page_size or _PAGE_SIZE, _MAX_PAGE_SIZE)
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

    def watch(
        self, job_id: str, is_active: Callable[[], bool]
    ) -> Iterator[devrunner_pb2.WatchJobResponse]:
        return self._jobs.follow(job_id, is_active)

    def recover(self) -> None:
        """After a restart: jobs whose run still exists (a container, found by label) are
        re-attached, their output followed from the last event recorded; the others (local
        processes died with the devrunner) are marked lost. Returns once each is either."""
        for job in self._jobs.unfinished():
            since = self._jobs.last_event_time(job.job_id)
            timeout = (
                seconds(job.spec.timeout)
                if job.spec.HasField("timeout")
                else self._defaults.timeout_s
            )
            remaining = max(1.0, timeout - (time.time() - job.start_time.seconds))

            def reattach(
                on_line: OnLine, job_id: str = job.job_id, since: float = since
            ) -> Run | None:
                return self._runner.reattach(job_id, on_line, since)

            self._run_in_background(job.job_id, reattach, remaining, reattached=True).wait(30)

    # Running -----------------------------------------------------------------------------

    def _run_in_background(
        self, job_id: str, start_run: StartRun, timeout_s: float, *, reattached: bool
    ) -> threading.Event:
        """Runs the job in a thread of its own; the event is set once it runs or has ended."""
        started = threading.Event()
        threading.Thread(
            target=self._run,
            args=(job_id, start_run, timeout_s, reattached, started),
            daemon=True,
        ).start()
        return started

    def _run(
        self,
        job_id: str,
        start_run: StartRun,
        timeout_s: float,
        reattached: bool,
        started: threading.Event,
    ) -> None:
        """Runs a job to its end. `start_run(on_line)` starts it (or re-attaches to it) and
        returns the run; whatever happens, the job ends in a final state."""
        with tracer.start_as_current_span(
            "devrunner.job",
            attributes={"straightline.job_id": job_id, "straightline.reattached": reattached},
        ) as span:
            output = TrainerOutput(self._jobs, job_id, span)
            if not reattached:
                job = self._jobs.get(job_id)
                job.trace_id = format(span.get_span_context().trace_id, "032x")
                self._jobs.save(job)
            try:
                run = self._start(job_id, start_run, output)
                if reattached:
                    log.info("re-attached to a running job", extra={"job_id": job_id})
                else:
                    self._jobs.set_state(
                        job_id, devrunner_pb2.JOB_STATE_RUNNING, "running", started=True
                    )
                started.set()
                self._conclude(job_id, self._wait(run, timeout_s), output)
            except _Ended as ended:
                self._jobs.set_state(job_id, ended.state, ended.message, ended=True)
            except ServiceError as error:
                self._jobs.set_state(job_id, devrunner_pb2.JOB_STATE_FAILED, str(error), ended=True)
            except Exception as error:  # a job must end in a state, whatever went wrong
                log.exception("job %s failed inside the devrunner", job_id)
                self._jobs.set_state(
                    job_id,
                    devrunner_pb2.JOB_STATE_FAILED,
                    f"the devrunner failed running the job: {error}",
                    ended=True,
                )
            finally:
                with self._lock:
                    self._runs.pop(job_id, None)
                started.set()

    def _start(self, job_id: str, start_run: StartRun, output: TrainerOutput) -> Run:
        with self._lock:
            if job_id in self._cancelled:
                raise _Ended(devrunner_pb2.JOB_STATE_CANCELLED, "cancelled before start")
            run = start_run(output.on_line)
            if run is None:
                raise _Ended(
                    devrunner_pb2.JOB_STATE_LOST, "the devrunner restarted while the job ran"
                )
            self._runs[job_id] = run
            return run

    @staticmethod
    def _wait(run: Run, timeout_s: float) -> int:
        status = run.wait(timeout_s)
        if status is None:
            run.stop()
            run.wait(30)
            raise _Ended(
                devrunner_pb2.JOB_STATE_TIMED_OUT,
                f"the job ran longer than its timeout ({timeout_s:.0f} s)",
            )
        return status

    def _conclude(self, job_id: str, status: int, output: TrainerOutput) -> None:
        job = self._jobs.get(job_id)
        with self._lock:
            cancelled = job_id in self._cancelled
        if cancelled:
            raise _Ended(devrunner_pb2.JOB_STATE_CANCELLED, "cancelled")
        if status != 0 or not job.HasField("model"):
            raise _Ended(
                devrunner_pb2.JOB_STATE_FAILED,
                f"the job exited with status {status}; its last lines:\n{output.tail}",
            )
        self._jobs.set_state(job_id, devrunner_pb2.JOB_STATE_SUCCEEDED, "done", ended=True)

    def _grant(
        self, kind: devrunner_pb2.JobKind, asked: devrunner_pb2.Resources
    ) -> devrunner_pb2.Resources:
        specs.check_resource_ranges(asked)
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


class _Ended(Exception):
    def __init__(self, state: devrunner_pb2.JobState, message: str) -> None:
        super().__init__(message)
        self.state, self.message = state, message

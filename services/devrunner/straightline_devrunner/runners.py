"""Where jobs run: a container through the Docker SDK, or a local process without an engine.

A runner starts the trainer with a job's arguments and environment (the job's trace context)
and hands every output line to the job (`on_line(stream, text)`); the run's `wait()` returns
the exit status, `stop()` ends it early. Either way, nothing is left once `wait()` has
returned: the container is removed.
"""

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from straightline.v1 import devrunner_pb2
from straightline_common.errors import FailedPrecondition, Unavailable
from straightline_common.processes import dying_with_parent

log = logging.getLogger(__name__)
TRAINER = ["python", "-m", "straightline_devrunner.trainer"]
LABEL_JOB = "straightline.job"
LABEL_ROLE = "straightline.role"


OnLine = Callable[[str, str], None]


@dataclass(frozen=True)
class JobResources:
    """What a job runs with: where its data is on this host, and the resources granted."""

    dataset: str
    store: str
    gpus: int
    cpus: float
    memory_bytes: int


class Run(Protocol):
    def wait(self, timeout: float | None) -> int | None:
        """The exit status, or None if the job is still running after `timeout`."""

    def stop(self) -> None: ...


class JobRunner(Protocol):
    @property
    def kind(self) -> devrunner_pb2.Runner: ...

    @property
    def name(self) -> str: ...

    def has_gpus(self) -> bool: ...

    def job_paths(self, resources: JobResources) -> tuple[str, str]:
        """Where the job sees its dataset and the model store."""

    def start(
        self,
        job_id: str,
        arguments: list[str],
        resources: JobResources,
        image: str,
        on_line: OnLine,
        environment: dict[str, str],
    ) -> Run: ...

    def reattach(self, job_id: str, on_line: OnLine, since: float) -> Run | None:
        """After a devrunner restart: the job's run, followed from just after `since`, if
        it still exists."""


class LocalRun:
    def __init__(
        self, job_id: str, arguments: list[str], on_line: OnLine, environment: dict[str, str]
    ) -> None:
        self.job_id = job_id
        self._process = subprocess.Popen(
            dying_with_parent([sys.executable, *TRAINER[1:], *arguments]),
            env={**os.environ, **environment},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=_pump, args=(stream, name, on_line), daemon=True)
            for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr"))
        ]
        for reader in self._readers:
            reader.start()

    def wait(self, timeout: float | None) -> int | None:
        """The exit status, or None if the job is still running after `timeout`."""
        try:
            status = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(5)
        return status

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()


def _pump(stream: IO[str], name: str, on_line: OnLine) -> None:
    for line in stream:
        on_line(name, line.rstrip("\n"))


class LocalRunner:
    kind = devrunner_pb2.RUNNER_LOCAL
    name = "local"

    def has_gpus(self) -> bool:
        return False

    def job_paths(self, resources: JobResources) -> tuple[str, str]:
        return resources.dataset, resources.store

    def start(
        self,
        job_id: str,
        arguments: list[str],
        resources: JobResources,
        image: str,
        on_line: OnLine,
        environment: dict[str, str],
    ) -> LocalRun:
        return LocalRun(job_id, arguments, on_line, environment)

    def reattach(self, job_id: str, on_line: OnLine, since: float) -> None:
        """Local jobs die with the devrunner: there is nothing to re-attach to."""
        return None


class ContainerRun:
    def __init__(self, container: Any, on_line: OnLine, since: float | None = None) -> None:
        self._container = container
        self._since = since
        self._pumps = follow_both(self._follow_logs, on_line)

    def _follow_logs(self, stream: str, on_line: OnLine) -> None:
        chunks = self._container.logs(
            stream=True,
            follow=True,
            stdout=stream == "stdout",
            stderr=stream == "stderr",
            since=self._since,
        )
        pump_lines(chunks, stream, on_line)

    def wait(self, timeout: float | None) -> int | None:
        import requests

        try:
            status = self._container.wait(timeout=timeout)["StatusCode"]
        except requests.exceptions.RequestException:  # the engine's wait timed out
            return None
        for pump in self._pumps:
            pump.join(5)
        self._container.remove(force=True)
        return int(status)

    def stop(self) -> None:
        self._container.stop(timeout=10)


def follow_both(follow: Callable[[str, OnLine], None], on_line: OnLine) -> list[threading.Thread]:
    """Threads following a run's stdout and stderr (`follow(stream, on_line)`), started."""
    pumps = [
        threading.Thread(target=follow, args=(stream, on_line), daemon=True)
        for stream in ("stdout", "stderr")
    ]
    for pump in pumps:
        pump.start()
    return pumps


def pump_lines(chunks: Iterable[bytes], stream: str, on_line: OnLine) -> None:
    """Hands each line of a stream of byte chunks to `on_line`, a last unfinished one at its
    end."""
    buffered = ""
    for chunk in chunks:
        buffered += chunk.decode(errors="replace")
        *lines, buffered = buffered.split("\n")
        for line in lines:
            on_line(stream, line)
    if buffered:
        on_line(stream, buffered)


class EngineRunner:
    """Runners through a Docker engine: the job sees its dataset at /data and the store at
    /models (the store's directory, or the named volume holding it)."""

    def __init__(self, client: Any, store_volume: str = "") -> None:
        self._client = client
        self._store_volume = store_volume  # mounted instead of the store's path, if given

    def job_paths(self, resources: JobResources) -> tuple[str, str]:
        return "/data", "/models"


class DockerRunner(EngineRunner):
    """Jobs as containers: no network, CPU and memory limits, GPUs through device requests,
    the dataset read-only and the model store read-write, labels naming the job."""

    kind = devrunner_pb2.RUNNER_DOCKER
    name = "docker"

    def has_gpus(self) -> bool:
        return "nvidia" in (self._client.info().get("Runtimes") or {})

    def start(
        self,
        job_id: str,
        arguments: list[str],
        resources: JobResources,
        image: str,
        on_line: OnLine,
        environment: dict[str, str],
    ) -> ContainerRun:
        import docker
        from docker.errors import APIError

        options = {
            "labels": {LABEL_JOB: job_id, LABEL_ROLE: "job"},
            "network_mode": "none",
            "volumes": {
                resources.dataset: {"bind": "/data", "mode": "ro"},
                self._store_volume or resources.store: {"bind": "/models", "mode": "rw"},
            },
            "user": f"{os.getuid()}:{os.getgid()}",
            "environment": environment,
            "detach": True,
        }
        if resources.cpus:
            options["nano_cpus"] = int(resources.cpus * 1e9)
        if resources.memory_bytes:
            options["mem_limit"] = resources.memory_bytes
        if resources.gpus:
            options["device_requests"] = [
                docker.types.DeviceRequest(count=resources.gpus, capabilities=[["gpu"]])
            ]
        try:
            container = self._client.containers.run(
                image, [*TRAINER[1:], *arguments], entrypoint=["python"], **options
            )
        except APIError as error:
            self.remove_job_containers(job_id)  # a failed start leaves the container behind
            if resources.gpus:
                raise FailedPrecondition(
                    f"the engine could not give the job GPUs: {error}"
                ) from None
            raise Unavailable(f"could not start the job's container: {error}") from None
        return ContainerRun(container, on_line)

    def reattach(self, job_id: str, on_line: OnLine, since: float) -> ContainerRun | None:
        """The job's container, found by its label, followed from just after `since`."""
        found = self._client.containers.list(
            all=True, filters={"label": f"{LABEL_JOB}={job_id}"}, ignore_removed=True
        )
        if not found:
            return None
        return ContainerRun(found[0], on_line, since=since + 0.001 if since else None)

    def remove_job_containers(self, job_id: str) -> None:
        for container in self._client.containers.list(
            all=True, filters={"label": f"{LABEL_JOB}={job_id}"}, ignore_removed=True
        ):
            container.remove(force=True)

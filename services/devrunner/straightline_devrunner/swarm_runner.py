"""Jobs as one-shot Docker Swarm services (`runner=swarm`): each job a service of one task that
is never restarted, wherever the swarm may run it (the runner's constraints; GPUs as the
generic resource `NVIDIA-GPU` the GPU nodes advertise), with the container limits of the Docker
runner (no way out: an internal overlay network of its own, which the swarm requires instead of
none; CPU and memory limits; the dataset read-only, the store read-write). Its
output is followed through the service's logs, which the swarm gathers from any node; the
service is removed once the job has ended, and found again by its label after a devrunner
restart. The dataset's path must exist on every node that may run the job."""

import contextlib
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from docker.errors import APIError, DockerException, NotFound
from docker.types import Mount, Resources, RestartPolicy, ServiceMode

from straightline.v1 import devrunner_pb2
from straightline_common.errors import Unavailable
from straightline_devrunner.runners import (
    LABEL_JOB,
    LABEL_ROLE,
    TRAINER,
    EngineRunner,
    JobResources,
    OnLine,
    follow_both,
    pump_lines,
)

GPU_RESOURCE = "NVIDIA-GPU"
_ENDED = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
_QUIET_S = 0.5  # once the task has ended, the last lines are in when the logs are this quiet


class ServiceRun:
    def __init__(
        self, service: Any, network: Any, on_line: OnLine, since: float | None = None
    ) -> None:
        self._service = service
        self._network = network
        self._since = since
        self._last_line = time.monotonic()
        self._pumps = follow_both(self._follow_logs, on_line)

    def _follow_logs(self, stream: str, on_line: OnLine) -> None:
        options: dict[str, Any] = {"follow": True, stream: True}
        if self._since:
            options["since"] = math.ceil(self._since)

        def noted(stream: str, line: str) -> None:
            self._last_line = time.monotonic()
            on_line(stream, line)

        with contextlib.suppress(DockerException):  # the service was removed: the stream ends
            pump_lines(self._service.logs(**options), stream, noted)

    def wait(self, timeout: float | None) -> int | None:
        """The exit status once the job's task has ended (its service then removed), or None
        if it is still running after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (status := self._exit_status()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.2)
        quiet_deadline = time.monotonic() + 10
        while time.monotonic() - self._last_line < _QUIET_S < quiet_deadline - time.monotonic():
            time.sleep(0.1)
        self._remove()
        for pump in self._pumps:
            pump.join(5)
        return status

    def stop(self) -> None:
        self._remove()

    def _exit_status(self) -> int | None:
        try:
            tasks = self._service.tasks()
        except NotFound:
            return -15  # removed (stopped) before it ended
        ended = [t for t in tasks if t["Status"]["State"] in _ENDED]
        if not tasks or len(ended) < len(tasks):
            return None
        return int(ended[0]["Status"].get("ContainerStatus", {}).get("ExitCode", -1))

    def _remove(self) -> None:
        """The service, then its network once its task's container has gone."""
        with contextlib.suppress(NotFound):
            self._service.remove()
        deadline = time.monotonic() + 60
        while True:
            try:
                self._network.remove()
                return
            except NotFound:
                return
            except APIError:  # still in use by the task's container
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


class SwarmRunner(EngineRunner):
    kind = devrunner_pb2.RUNNER_SWARM
    name = "swarm"

    def __init__(
        self, client: Any, store_volume: str = "", constraints: Sequence[str] = ()
    ) -> None:
        super().__init__(client, store_volume)
        self._constraints = list(constraints)

    def has_gpus(self) -> bool:
        """Whether a node of the swarm advertises GPUs as a generic resource."""
        for node in self._client.nodes.list():
            resources = node.attrs["Description"]["Resources"].get("GenericResources") or []
            for resource in resources:
                if resource.get("DiscreteResourceSpec", {}).get("Kind") == GPU_RESOURCE:
                    return True
        return False

    def start(
        self,
        job_id: str,
        arguments: list[str],
        resources: JobResources,
        image: str,
        on_line: OnLine,
        environment: dict[str, str],
    ) -> ServiceRun:
        labels = {LABEL_JOB: job_id, LABEL_ROLE: "job"}
        store = self._store_volume or resources.store
        name = f"straightline-job-{job_id}"
        try:
            network = self._client.networks.create(
                name, driver="overlay", internal=True, labels=labels
            )
        except APIError as error:
            raise Unavailable(f"could not make the job's network: {error}") from None
        try:
            service = self._client.services.create(
                image,
                command=["python"],
                args=[*TRAINER[1:], *arguments],
                name=name,
                labels=labels,
                container_labels=labels,
                env=[f"{key}={value}" for key, value in environment.items()],
                user=f"{os.getuid()}:{os.getgid()}",
                mode=ServiceMode("replicated", replicas=1),
                restart_policy=RestartPolicy(condition="none"),
                networks=[network.id],
                mounts=[
                    Mount("/data", resources.dataset, type="bind", read_only=True),
                    Mount("/models", store, type="volume" if self._store_volume else "bind"),
                ],
                resources=Resources(
                    cpu_limit=int(resources.cpus * 1e9) or None,
                    mem_limit=resources.memory_bytes or None,
                    generic_resources={GPU_RESOURCE: resources.gpus} if resources.gpus else None,
                ),
                constraints=self._constraints,
            )
        except APIError as error:
            network.remove()
            raise Unavailable(f"could not start the job's Swarm service: {error}") from None
        return ServiceRun(service, network, on_line)

    def reattach(self, job_id: str, on_line: OnLine, since: float) -> ServiceRun | None:
        """The job's service, found by its label, followed from just after `since`."""
        labelled = {"label": f"{LABEL_JOB}={job_id}"}
        found = self._client.services.list(filters=labelled)
        networks = self._client.networks.list(filters=labelled)
        if not found or not networks:
            return None
        return ServiceRun(found[0], networks[0], on_line, since=since + 0.001 if since else None)

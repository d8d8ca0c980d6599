"""Docker on Swarm: the platform's model servers are the tasks of one Swarm service this adapter
owns (labelled with its name), scaled on demand between `min_warm` and `max_containers`
replicas. A cold start is a new task, wherever Swarm places it (the service's constraints); an
idle one is stopped and the service scaled down; a task that dies is replaced by Swarm and
taken back into the pool. Each task serves HTTPS (with the adapter's certificate, handed over
as Swarm secrets) on its node's network at `base_port + slot`, and the adapter reaches it at
its node's address, so the tasks may run on any node of the swarm."""

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.errors import DockerException, NotFound
from docker.types import EndpointSpec, Mount, RestartPolicy, SecretReference, ServiceMode

from straightline.v1 import types_pb2
from straightline_common.errors import DeadlineExceeded, Unavailable
from straightline_common.tls import TlsFiles, tls_flags
from straightline_inference.adapter import containers
from straightline_inference.adapter.modelserver_client import ModelServerClient
from straightline_inference.adapter.pooled_backend import ModelServerPool

log = logging.getLogger(__name__)
SECRETS_DIR = "/run/secrets"
_PARTS = ("cert", "key", "ca")


@dataclass(eq=False)
class SwarmTask:
    """A pool environment: the task it is bound to now (a task Swarm removed in its place on
    a scale-down is replaced by the one it kept), and its model server's client."""

    task_id: str
    client: ModelServerClient


class SwarmBackend(ModelServerPool):
    kind = types_pb2.PLATFORM_DOCKER

    def __init__(
        self,
        *,
        base_port: int,
        constraints: list[str],
        tls: TlsFiles | None = None,
        **pooled: Any,
    ) -> None:
        """`pooled`: PooledBackend's settings; the pool's environments are the service's
        tasks, its slots each task's threads."""
        super().__init__(**pooled)
        self._base_port = base_port
        self._constraints = constraints
        self._tls = tls
        self._service: Any = None
        self._replicas = 0
        self._bound: dict[str, SwarmTask] = {}  # task id -> the environment bound to it
        self._scaling = threading.Lock()  # one change of the replicas at a time
        self._closing = False

    def start(self) -> None:
        self._open_engine()
        self._remove_owned_service()
        self._service = self._engine_().services.create(
            self._image,
            command=["sh", "-c", self._model_server_command()],
            name=f"{self._owner}-model-server",
            env=[*_environment(), "SLOT={{.Task.Slot}}"],
            user=f"{os.getuid()}:{os.getgid()}",  # reads what the adapter reads
            labels=self._labels(),
            container_labels=self._labels(),
            mode=ServiceMode("replicated", replicas=0),
            networks=["host"],
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            mounts=self._mounts(),
            secrets=self._secrets(),
            constraints=self._constraints,
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            stop_grace_period=10_000_000_000,
        )
        self._open_pool(self._start_task, self._stop_task, self._probe_task, "the Docker swarm")

    def stop(self) -> None:
        self._closing = True  # the pool's environments go with the service, not one by one
        super().stop()
        self._remove_owned_service()

    # The service ------------------------------------------------------------------------------

    def _model_server_command(self) -> str:
        """The model server on its node's loopback or address, at the port of its slot."""
        tls = self._secret_files()
        flags = " ".join(tls_flags(tls)) if tls else ""
        threads = self._pool_settings.slots_per_environment
        return (
            "exec python -m straightline_inference.modelserver --store /models "
            f'--listen "127.0.0.1:$(({self._base_port} + SLOT))" --threads {threads} {flags}'
        )

    def _labels(self) -> dict[str, str]:
        return {containers.LABEL_OWNER: self._owner, containers.LABEL_ROLE: "model-server"}

    def _mounts(self) -> list[Mount]:
        source = self._sharing.models
        if source is None:
            return []
        kind = "bind" if source.startswith("/") else "volume"
        return [Mount("/models", source, type=kind, read_only=True)]

    def _secret_files(self) -> TlsFiles | None:
        if self._tls is None:
            return None
        cert, key, ca = (Path(SECRETS_DIR, f"{self._owner}-{part}") for part in _PARTS)
        return TlsFiles(cert, key, ca)

    def _secrets(self) -> list[SecretReference]:
        """The adapter's certificate, key and CA as Swarm secrets of its name (the model
        servers serve HTTPS with them), readable by the model server's user only (the adapter's)."""
        if self._tls is None:
            return []
        references = []
        for part, data in zip(_PARTS, self._tls.read(), strict=True):
            name = f"{self._owner}-{part}"
            secret = self._engine_().secrets.create(name=name, data=data, labels=self._labels())
            references.append(
                SecretReference(
                    secret.id, name, uid=str(os.getuid()), gid=str(os.getgid()), mode=0o400
                )
            )
        return references

    def _remove_owned_service(self) -> None:
        """The service and secrets of this adapter's name: its own at stop, at start what a
        predecessor of its name left (killed, it could not)."""
        engine = self._engine_()
        owned = {"label": f"{containers.LABEL_OWNER}={self._owner}"}
        for service in engine.services.list(filters=owned):
            service.remove()
            log.info("removed the Swarm service", extra={"service": service.name})
        deadline = time.monotonic() + 60
        while (
            engine.containers.list(all=True, filters=owned, ignore_removed=True)
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)  # its tasks' containers go, then the secrets they used may
        for secret in engine.secrets.list(filters=owned):
            secret.remove()

    def _engine_(self) -> Any:
        if self._engine is None:
            raise Unavailable("the Docker engine is not connected")
        return self._engine

    # Tasks: the pool's environments -----------------------------------------------------------

    def _start_task(self) -> SwarmTask:
        with self._scaling:
            self._scale(self._replicas + 1)
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            for task in self._running_tasks():
                bound = self._claim(task)
                if bound is not None:
                    return bound
            time.sleep(0.2)
        raise Unavailable(f"no model-server task of the swarm started in {self._start_timeout_s} s")

    def _claim(self, task: dict[str, Any]) -> SwarmTask | None:
        """The task as a new environment once its model server answers, unless another
        environment has it."""
        with self._scaling:
            if task["ID"] in self._bound:
                return None
            environment = SwarmTask(task["ID"], self._client_of(task))
            self._bound[task["ID"]] = environment
        try:
            environment.client.wait_ready(timeout=self._start_timeout_s)
        except (Unavailable, DeadlineExceeded):
            with self._scaling:
                del self._bound[task["ID"]]
            environment.client.close()
            return None
        log.info("model-server task ready", extra={"task": task["ID"][:12], "slot": task["Slot"]})
        return environment

    def _stop_task(self, environment: SwarmTask) -> None:
        """Scales the service down by one. Swarm removes a task of its choice: this one's
        container is stopped first, so that its slot is the one not running; should Swarm keep
        it and remove another idle task, the environment bound to that one takes this task."""
        environment.client.close()
        if self._closing:
            return
        with self._scaling:
            self._bound.pop(environment.task_id, None)
            self._stop_container_of(environment.task_id)
            self._scale(self._replicas - 1)
        self._rebind_orphans()

    def _probe_task(self, environment: SwarmTask) -> str | None:
        """Why an idle task cannot serve (gone, not running, not answering), or None."""
        state = self._task_state(environment.task_id)
        if state != "running":
            return f"model-server task {environment.task_id[:12]} is {state}"
        try:
            environment.client.probe()
        except (Unavailable, DeadlineExceeded) as error:
            return f"model-server task {environment.task_id[:12]}: {error}"
        return None

    def _rebind_orphans(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = {task["ID"]: task for task in self._running_tasks()}
            with self._scaling:
                orphans = [e for tid, e in self._bound.items() if tid not in running]
                spare = [task for tid, task in running.items() if tid not in self._bound]
                if not orphans:
                    return
                for environment, task in zip(orphans, spare, strict=False):
                    del self._bound[environment.task_id]
                    environment.client.close()
                    environment.task_id, environment.client = task["ID"], self._client_of(task)
                    self._bound[task["ID"]] = environment
            time.sleep(0.2)

    def _scale(self, replicas: int) -> None:
        try:
            self._service.scale(replicas)
            self._service.reload()
        except DockerException as error:
            raise Unavailable(f"could not scale the model-server service: {error}") from None
        self._replicas = replicas

    def _running_tasks(self) -> list[dict[str, Any]]:
        try:
            tasks = self._service.tasks(filters={"desired-state": "running"})
        except DockerException:
            return []
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def _task_state(self, task_id: str) -> str:
        try:
            task = self._engine_().api.inspect_task(task_id)
        except NotFound:
            return "gone"
        except DockerException as error:
            return f"unknown ({error})"
        if task["DesiredState"] != "running":
            return f"shutting down ({task['Status']['State']})"
        return str(task["Status"]["State"])

    def _stop_container_of(self, task_id: str) -> None:
        try:
            task = self._engine_().api.inspect_task(task_id)
            container_id = task["Status"]["ContainerStatus"]["ContainerID"]
            self._engine_().containers.get(container_id).stop(timeout=5)
        except (DockerException, KeyError):
            pass  # on another node, or gone already: Swarm removes one of its choice

    def _client_of(self, task: dict[str, Any]) -> ModelServerClient:
        node = self._engine_().nodes.get(task["NodeID"])
        address = node.attrs["Status"]["Addr"]
        host = "127.0.0.1" if address in ("0.0.0.0", "") else address
        scheme = "http" if self._tls is None else "https"
        port = self._base_port + int(task["Slot"])
        return ModelServerClient(
            f"{scheme}://{host}:{port}", self._pool_settings.slots_per_environment, self._tls
        )


def _environment() -> list[str]:
    inherited = containers.inherited_environment("straightline-modelserver")
    return [f"{key}={value}" for key, value in inherited.items()]

"""Containers the adapters start through the Docker SDK: on the adapter's own network (the
host's, or the adapter container's under compose), labelled, and always removed by whoever
started them."""

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound

from straightline_common.errors import FailedPrecondition

LABEL_ROLE = "straightline.role"
LABEL_OWNER = "straightline.owner"
# What the containers inherit from the adapter: trace settings, so their spans join its
# traces, and TensorFlow's thread pools, so a small machine can give each model fewer threads.
_INHERITED_ENVIRONMENT = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "STRAIGHTLINE_LOG_LEVEL",
    "OMP_NUM_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


def engine() -> docker.DockerClient:
    """A client of a reachable Docker engine, or FailedPrecondition saying why not."""
    try:
        client = docker.from_env()
        client.ping()
        return client
    except DockerException as error:
        raise FailedPrecondition(f"no Docker engine is reachable: {error}") from None


def engine_reachable() -> bool:
    try:
        engine().close()
        return True
    except FailedPrecondition:
        return False


def require_image(client: docker.DockerClient, image: str) -> None:
    try:
        client.images.get(image)
    except ImageNotFound:
        raise FailedPrecondition(
            f"image {image} is not on this engine; build it with deploy/images/build.sh"
        ) from None


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports free now (a process or container on the host network will bind
    them). The probes stay open together so that the same port is not handed out twice."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def inherited_environment(service_name: str) -> dict[str, str]:
    inherited = {k: os.environ[k] for k in _INHERITED_ENVIRONMENT if k in os.environ}
    return {**inherited, "OTEL_SERVICE_NAME": service_name}


@dataclass(frozen=True)
class Sharing:
    """What the adapter's containers share with it.

    network_mode: "host", or "container:<adapter container>" when the adapter itself runs in
    a container: either way the containers' 127.0.0.1 is the adapter's, so it reaches them
    on loopback. models: what is mounted read-only at /models: the model store's directory,
    a named volume holding it (under compose), or None for a packaged image that carries
    its models."""

    network_mode: str = "host"
    models: str | None = None

    @classmethod
    def of(cls, config: Any) -> "Sharing":
        """From an adapter's configuration (`AdapterConfig`)."""
        if config.models_in_image:
            models = None
        else:
            models = config.store_volume or os.path.abspath(config.store)
        return cls(config.container_network, models)


def run(
    client: docker.DockerClient,
    image: str,
    *,
    role: str,
    owner: str,
    sharing: Sharing,
    files: tuple[Path, ...] = (),
    **options: Any,
) -> Any:
    """Starts a detached container with what it shares with the adapter, and labels naming
    its role and the adapter instance that owns it. It runs as the adapter's own user, so it
    reads whatever model files the adapter can read; `files` (TLS certificates) are mounted
    read-only at their own paths."""
    volumes = {sharing.models: {"bind": "/models", "mode": "ro"}} if sharing.models else {}
    volumes.update({str(path): {"bind": str(path), "mode": "ro"} for path in files})
    return client.containers.run(
        image,
        detach=True,
        network_mode=sharing.network_mode,
        user=f"{os.getuid()}:{os.getgid()}",
        labels={LABEL_ROLE: role, LABEL_OWNER: owner},
        volumes=volumes,
        **options,
    )


def problem_of(container: Any, what: str) -> str | None:
    """Why a container of ours cannot serve (gone, exited, paused), or None while it runs."""
    try:
        container.reload()
    except DockerException:
        return f"{what} {container.short_id} is gone"
    if container.status != "running":
        return f"{what} {container.short_id} is {container.status}"
    return None


def remove_owned(client: docker.DockerClient, owner: str) -> int:
    """Removes every container labelled as owned by `owner`; returns how many."""
    owned = client.containers.list(
        all=True, filters={"label": f"{LABEL_OWNER}={owner}"}, ignore_removed=True
    )
    for container in owned:
        container.remove(force=True)
    return len(owned)


def logs_tail(container: Any, lines: int = 20) -> str:
    try:
        return str(container.logs(tail=lines).decode(errors="replace"))
    except DockerException:
        return "(no logs)"

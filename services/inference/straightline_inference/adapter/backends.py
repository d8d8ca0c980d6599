"""The backends an adapter can front, by the name its `platform` setting gives: each a
function from the adapter's configuration to a backend. A new backend is one class and one
entry here. The model servers a backend starts serve HTTPS with the adapter's certificate when
it has one."""

from collections.abc import Callable
from typing import Any

from straightline_common.names import check_model
from straightline_common.tls import tls_files
from straightline_inference.adapter import containers
from straightline_inference.adapter.backend import Backend
from straightline_inference.adapter.coalescer import Batching
from straightline_inference.adapter.config import AdapterConfig
from straightline_inference.adapter.docker_backend import DockerBackend
from straightline_inference.adapter.flask_backend import FlaskBackend
from straightline_inference.adapter.oip_backend import OipBackend
from straightline_inference.adapter.pooled_backend import PoolSettings
from straightline_inference.adapter.queue_bound import QueueBound
from straightline_inference.adapter.serverless_backend import AwsServerless, LocalServerless
from straightline_inference.adapter.swarm_backend import SwarmBackend


def flask(config: AdapterConfig) -> Backend:
    return FlaskBackend(
        store=config.store,
        threads=config.threads,
        processes=config.model_server_processes,
        queue_limit=_queue(config),
        url=config.model_server_url,
        tls=tls_files(vars(config)),
    )


def docker(config: AdapterConfig) -> Backend:
    """Containers on this host's engine, or the tasks of a Swarm service."""
    pooled: dict[str, Any] = {
        "store": config.store,
        "image": config.image,
        "owner": config.name,
        "sharing": containers.Sharing.of(config),
        "pool": PoolSettings(
            max_environments=config.max_containers,
            slots_per_environment=config.threads_per_container,
            queue_limit=_queue(config),
            idle_timeout_s=config.idle_timeout_s,
            min_environments=config.min_warm,
        ),
        "tls": tls_files(vars(config)),
        "batching": _batching(config),
    }
    if config.docker_backend == "swarm":
        constraints = [c.strip() for c in config.swarm_constraints.split(",") if c.strip()]
        return SwarmBackend(base_port=config.swarm_base_port, constraints=constraints, **pooled)
    return DockerBackend(**pooled)


def serverless(config: AdapterConfig) -> Backend:
    """AWS Lambda when a function is named, else environments under the runtime emulator."""
    if config.function_name:
        return AwsServerless(
            store=config.store,
            function_name=config.function_name,
            concurrency=config.concurrency,
            endpoint_url=config.endpoint_url or None,
            batching=_batching(config),
        )
    return LocalServerless(
        store=config.store,
        image=config.image,
        runner=config.runner,
        owner=config.name,
        concurrency=config.concurrency,
        idle_timeout_s=config.idle_timeout_s,
        min_warm=config.min_warm,
        sharing=containers.Sharing.of(config),
        batching=_batching(config),
    )


def _queue(config: AdapterConfig) -> QueueBound:
    if config.queue_limit is None:
        return QueueBound.draining_within(config.latency_objective_ms / 1e3)
    return QueueBound(config.queue_limit)


def _batching(config: AdapterConfig) -> Batching:
    return Batching(config.batch_size, config.batch_delay_ms / 1e3)


def oip(config: AdapterConfig) -> Backend:
    return OipBackend(
        url=config.oip_url,
        models=[_model_ref(m) for m in config.oip_models.split(",") if m.strip()],
        concurrency=config.concurrency,
        queue_limit=_queue(config),
    )


def _model_ref(text: str) -> tuple[str, str]:
    name, _, version = text.strip().partition(":")
    return check_model(name, version)


BACKENDS: dict[str, Callable[[AdapterConfig], Backend]] = {
    "flask": flask,
    "docker": docker,
    "serverless": serverless,
    "oip": oip,
}


def make_backend(config: AdapterConfig) -> Backend:
    """The backend of the configured platform (`config.load` checked that there is one)."""
    return BACKENDS[config.platform](config)

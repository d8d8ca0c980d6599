"""The devrunner as a running server: the runner its configuration names, the core, the gRPC
server in front of it; start and stop."""

import logging
import os
from pathlib import Path
from typing import Any

from straightline.v1 import devrunner_pb2_grpc
from straightline_common.auth import server_tokens
from straightline_common.config import ConfigError
from straightline_common.grpcserver import GrpcServer
from straightline_common.metrics import serve_metrics
from straightline_common.modelstore import open_store
from straightline_common.processes import write_port_file
from straightline_common.tls import tls_files
from straightline_devrunner.config import DevRunnerConfig
from straightline_devrunner.core import DevRunner
from straightline_devrunner.jobs import JobStore
from straightline_devrunner.metrics import devrunner_metrics
from straightline_devrunner.runners import DockerRunner, JobRunner, LocalRunner
from straightline_devrunner.servicer import ACCESS, SERVICE_NAME, DevRunnerServicer
from straightline_devrunner.swarm_runner import SwarmRunner

log = logging.getLogger(__name__)


def engine() -> Any:
    """A client of the Docker engine, or None when none answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
        return client
    except DockerException:
        return None


def make_runner(config: DevRunnerConfig, docker_engine: Any) -> JobRunner:
    if config.runner == "local":
        log.warning("jobs run as local processes, not in containers (runner=local)")
        return LocalRunner()
    if docker_engine is None:
        raise ConfigError(f"runner={config.runner} but no Docker engine is reachable")
    if config.runner == "swarm":
        constraints = [c.strip() for c in config.swarm_constraints.split(",") if c.strip()]
        return SwarmRunner(docker_engine, config.store_volume, constraints)
    return DockerRunner(docker_engine, config.store_volume)


class DevRunnerServer:
    def __init__(self, config: DevRunnerConfig) -> None:
        self.config = config
        docker_engine = engine()
        self.runner = make_runner(config, docker_engine)
        os.makedirs(config.store, exist_ok=True)
        jobs = JobStore(config.state)
        self.metrics = devrunner_metrics(jobs)
        self.metrics_port = 0
        self.devrunner = DevRunner(
            jobs,
            open_store(config.store, config.model_s3_url),
            self.runner,
            engine=docker_engine,
            datasets=Path(config.datasets),
            allowed_images=config.images,
        )
        tls = tls_files(vars(config))
        servicer = DevRunnerServicer(self.devrunner)
        self._grpc = GrpcServer(
            config.listen,
            [lambda s: devrunner_pb2_grpc.add_DevRunnerServiceServicer_to_server(servicer, s)],
            [SERVICE_NAME],
            ACCESS,
            tokens=None if tls else server_tokens(config.tokens_file),
            tls_files=tls,
        )

    @property
    def address(self) -> str:
        return self._grpc.address

    def start(self) -> None:
        """Re-attaches to the jobs a predecessor left running, then serves."""
        self.devrunner.recover()
        self._grpc.start()
        self.metrics_port = serve_metrics(self.metrics, self.config.metrics_listen)
        self._grpc.mark_serving()
        if self.config.port_file:
            write_port_file(
                self.config.port_file, {"grpc": self._grpc.port, "metrics": self.metrics_port}
            )
        log.info(
            "devrunner serving",
            extra={
                "address": self.address,
                "runner": self.runner.name,
                "metrics_port": self.metrics_port,
            },
        )

    def stop(self, grace: float = 5.0) -> None:
        self._grpc.stop(grace)

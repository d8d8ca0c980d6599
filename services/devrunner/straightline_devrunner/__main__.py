"""`python -m straightline_devrunner --store DIR [--tokens-file F] [--runner docker|local]`"""

import argparse
import logging
import os
import sys
from pathlib import Path

from straightline.v1 import devrunner_pb2_grpc
from straightline_common.auth import TOKENS_FILE_SETTING, server_tokens
from straightline_common.config import ConfigError, Setting, add_settings, parse_address, resolve
from straightline_common.grpcserver import GrpcServer, ShutdownSignal
from straightline_common.logs import configure_logging
from straightline_common.modelstore import open_store, s3_url_setting
from straightline_common.processes import write_port_file
from straightline_common.telemetry import configure_tracing
from straightline_common.tls import TLS_SETTINGS, tls_files
from straightline_devrunner.jobs import JobStore
from straightline_devrunner.runners import DockerRunner, LocalRunner
from straightline_devrunner.service import DevRunner
from straightline_devrunner.servicer import ACCESS, SERVICE_NAME, DevRunnerServicer

log = logging.getLogger(__name__)


def _runner(text: str) -> str:
    if text not in ("docker", "local"):
        raise ValueError("expected docker or local")
    return text


SETTINGS = (
    Setting(
        "listen",
        "STRAIGHTLINE_DEVRUNNER_LISTEN",
        parse_address,
        "127.0.0.1:50071",
        "gRPC address to serve on",
    ),
    Setting("store", "STRAIGHTLINE_MODEL_STORE", str, "models", "model store directory"),
    Setting(
        "datasets",
        "STRAIGHTLINE_DEVRUNNER_DATASETS",
        str,
        "datasets",
        "directory under which jobs' datasets are named (a job's dataset_path is relative to it)",
    ),
    s3_url_setting("where package jobs also publish the model version"),
    Setting(
        "state", "STRAIGHTLINE_DEVRUNNER_STATE", str, "devrunner.sqlite", "SQLite file of the jobs"
    ),
    Setting(
        "runner",
        "STRAIGHTLINE_DEVRUNNER_RUNNER",
        _runner,
        "docker",
        "docker (jobs in containers) or local (processes, without an engine)",
    ),
    TOKENS_FILE_SETTING,
    *TLS_SETTINGS,
    Setting(
        "store_volume",
        "STRAIGHTLINE_DEVRUNNER_STORE_VOLUME",
        str,
        "",
        "docker runner: a named volume holding the store, mounted into job containers "
        "instead of the store's directory (when the devrunner itself runs in a container)",
    ),
    Setting(
        "images",
        "STRAIGHTLINE_DEVRUNNER_IMAGES",
        str,
        "straightline/trainer:dev",
        "comma-separated allow-list of job images",
    ),
    Setting(
        "port_file",
        "STRAIGHTLINE_DEVRUNNER_PORT_FILE",
        str,
        "",
        "write the bound port here as JSON once serving",
    ),
    Setting("log_level", "STRAIGHTLINE_LOG_LEVEL", str, "info", "log level"),
)


def _engine():
    """A client of the Docker engine, or None when none answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
        return client
    except DockerException:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="straightline-devrunner", description=__doc__)
    add_settings(parser, SETTINGS)
    try:
        settings = resolve(SETTINGS, parser.parse_args(argv), {})
        tls = tls_files(settings)  # all three or none, and readable
    except ConfigError as error:
        print(f"straightline-devrunner: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("devrunner", settings["log_level"])
    provider = configure_tracing("straightline-devrunner")
    engine = _engine()
    if settings["runner"] == "docker":
        if engine is None:
            log.error("runner=docker but no Docker engine is reachable")
            return 1
        runner = DockerRunner(engine, settings["store_volume"])
    else:
        log.warning("jobs run as local processes, not in containers (runner=local)")
        runner = LocalRunner()
    os.makedirs(settings["store"], exist_ok=True)
    devrunner = DevRunner(
        JobStore(settings["state"]),
        open_store(settings["store"], settings["model_s3_url"]),
        runner,
        engine=engine,
        datasets=Path(settings["datasets"]),
        allowed_images=frozenset(i.strip() for i in settings["images"].split(",") if i),
    )
    devrunner.recover()
    servicer = DevRunnerServicer(devrunner)
    server = GrpcServer(
        settings["listen"],
        [lambda s: devrunner_pb2_grpc.add_DevRunnerServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
        ACCESS,
        tokens=None if tls else server_tokens(settings["tokens_file"]),
        tls_files=tls,
    )
    shutdown = ShutdownSignal()
    server.start()
    server.mark_serving()
    if settings["port_file"]:
        write_port_file(settings["port_file"], {"grpc": server.port})
    log.info("devrunner serving", extra={"address": server.address, "runner": runner.kind})
    shutdown.wait_then_stop(server.stop, provider)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m straightline_inference.modelserver --store DIR [--model NAME[:VERSION]] ...`

Loads and warms the models, then serves the REST app with a fixed number of worker threads
(the server's capacity): over HTTP (waitress), or over HTTPS requiring a client certificate of
the deployment's CA when --tls-cert, --tls-key and --tls-client-ca are set (cheroot). With
--grpc-listen it also serves the Open Inference Protocol over gRPC there (`grpc_oip.py`). Writes
{"http": port, "health": port, "grpc": port} to --port-file once serving.
"""

import argparse
import logging
import signal
import sys

from inference import open_inference_grpc_pb2_grpc as oip_grpc
from straightline_common import oip_service
from straightline_common.config import (
    ConfigError,
    Setting,
    add_settings,
    parse_address,
    parse_optional_address,
    parse_positive_int,
    resolve,
)
from straightline_common.errors import ServiceError
from straightline_common.grpcserver import GrpcServer
from straightline_common.logs import configure_logging
from straightline_common.modelstore import open_store, s3_url_setting
from straightline_common.processes import write_port_file
from straightline_common.telemetry import configure_tracing
from straightline_common.tls import TLS_SETTINGS, TlsFiles, tls_files
from straightline_inference.batching import DEFAULT_BATCHING, BatchSettings
from straightline_inference.imaging import MAX_IMAGE_BYTES
from straightline_inference.model import ModelSet
from straightline_inference.modelserver import grpc_oip
from straightline_inference.modelserver.app import create_app
from straightline_inference.modelserver.grpc_oip import ModelServerOip
from straightline_inference.modelserver.health import serve_health
from straightline_inference.modelserver.servers import http_server, https_server

log = logging.getLogger(__name__)


SETTINGS = (
    Setting("store", "STRAIGHTLINE_MODEL_STORE", str, "models", "model store directory"),
    s3_url_setting("fetch model versions the store lacks from here"),
    Setting(
        "listen",
        "STRAIGHTLINE_MODELSERVER_LISTEN",
        parse_address,
        "127.0.0.1:8501",
        "HTTP address to serve on",
    ),
    Setting(
        "threads",
        "STRAIGHTLINE_MODELSERVER_THREADS",
        parse_positive_int,
        4,
        "worker threads: requests served at once",
    ),
    Setting(
        "max_batch_size",
        "STRAIGHTLINE_MODELSERVER_MAX_BATCH_SIZE",
        parse_positive_int,
        DEFAULT_BATCHING.max_batch_size,
        "adaptive batching: the most requests that go through a model at once (1: off); a "
        "model's metadata.json (serving.max_batch_size) overrides it",
    ),
    Setting(
        "max_queue_delay_ms",
        "STRAIGHTLINE_MODELSERVER_MAX_QUEUE_DELAY_MS",
        float,
        DEFAULT_BATCHING.max_queue_delay_s * 1e3,
        "adaptive batching: the longest a batch waits for requests still decoding their image",
    ),
    Setting(
        "health_listen",
        "STRAIGHTLINE_MODELSERVER_HEALTH_LISTEN",
        parse_optional_address,
        "",
        "also answer GET /healthz here, on a thread of its own (not behind the workers): "
        "for a supervisor's probe; empty: only on the main address",
    ),
    Setting(
        "grpc_listen",
        "STRAIGHTLINE_MODELSERVER_GRPC_LISTEN",
        parse_optional_address,
        "",
        "also serve the Open Inference Protocol over gRPC here (inference.GRPCInferenceService, "
        "for tritonclient.grpc and KServe's clients); empty: REST only",
    ),
    Setting(
        "port_file",
        "STRAIGHTLINE_MODELSERVER_PORT_FILE",
        str,
        "",
        "write the bound port here as JSON once serving",
    ),
    *TLS_SETTINGS,
    Setting("log_level", "STRAIGHTLINE_LOG_LEVEL", str, "info", "log level"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="straightline-modelserver", description=__doc__)
    parser.add_argument(
        "--model",
        action="append",
        help="NAME or NAME:VERSION; repeatable; "
        "default: the latest version of every model in the store",
    )
    add_settings(parser, SETTINGS)
    flags = parser.parse_args(argv)
    try:
        settings = resolve(SETTINGS, flags, {})
        tls = tls_files(settings)
        batching = BatchSettings(settings["max_batch_size"], settings["max_queue_delay_ms"] / 1e3)
    except (ConfigError, ServiceError) as error:
        print(f"straightline-modelserver: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("modelserver", settings["log_level"])
    configure_tracing("straightline-modelserver")
    try:
        store = open_store(settings["store"], settings["model_s3_url"])
        models = ModelSet(store, flags.model, batching)
    except ServiceError as error:
        log.error("cannot serve: %s", error)
        return 1
    host, _, port = settings["listen"].rpartition(":")
    if tls is None:
        server = http_server(create_app(models), host, int(port), settings["threads"])
    else:
        server = https_server(create_app(models), host, int(port), settings["threads"], tls)
    ports = {"http": server.port}
    if settings["health_listen"]:
        health_host, _, health_port = settings["health_listen"].rpartition(":")
        ports["health"] = serve_health(health_host, int(health_port))
    grpc_server = None
    if settings["grpc_listen"]:
        grpc_server = oip_grpc_server(settings["grpc_listen"], models, tls)
        ports["grpc"] = grpc_server.start()
        grpc_server.mark_serving()
    if settings["port_file"]:
        write_port_file(settings["port_file"], ports)
    log.info(
        "model server serving",
        extra={"ports": ports, "threads": settings["threads"], "models": models.refs()},
    )
    signal.signal(signal.SIGTERM, lambda *_: server.close())
    server.run()
    if grpc_server is not None:
        grpc_server.stop(grace=5)
    return 0


def oip_grpc_server(address: str, models: ModelSet, tls: TlsFiles | None) -> GrpcServer:
    servicer = ModelServerOip(models)
    return GrpcServer(
        address,
        [lambda server: oip_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)],
        [oip_service.SERVICE_NAME],
        grpc_oip.ACCESS,
        tls_files=tls,
        max_message_bytes=MAX_IMAGE_BYTES + 1024 * 1024,
    )


if __name__ == "__main__":
    sys.exit(main())

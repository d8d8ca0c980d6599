"""`python -m straightline_inference.adapter --platform flask|docker|serverless ...`"""

import logging
import sys

from straightline.v1 import inference_pb2_grpc
from straightline_common.auth import server_tokens
from straightline_common.config import ConfigError
from straightline_common.errors import ServiceError
from straightline_common.grpcserver import GrpcServer, ShutdownSignal
from straightline_common.logs import configure_logging
from straightline_common.processes import write_port_file
from straightline_common.telemetry import configure_tracing
from straightline_common.tls import tls_files
from straightline_inference.adapter import config, containers
from straightline_inference.adapter.core import Adapter
from straightline_inference.adapter.docker_platform import DockerPlatform
from straightline_inference.adapter.flask_platform import FlaskPlatform
from straightline_inference.adapter.platform import Platform
from straightline_inference.adapter.serverless_platform import AwsServerless, LocalServerless
from straightline_inference.adapter.servicer import ACCESS, SERVICE_NAME, InferenceServicer
from straightline_inference.heartbeat import Heartbeats

log = logging.getLogger(__name__)


def make_platform(settings: dict) -> Platform:
    """The platform; the model servers it starts serve HTTPS with the adapter's certificate
    when it has one."""
    common = {"store": settings["store"]}
    tls = tls_files(settings)
    if settings["platform"] == "flask":
        return FlaskPlatform(
            threads=settings["threads"], url=settings["model_server_url"], tls=tls, **common
        )
    if settings["platform"] == "docker":
        return DockerPlatform(
            image=settings["image"],
            owner=settings["name"],
            max_containers=settings["max_containers"],
            threads_per_container=settings["threads_per_container"],
            queue_limit=settings["queue_limit"],
            idle_timeout_s=settings["idle_timeout_s"],
            min_warm=settings["min_warm"],
            sharing=containers.Sharing.from_settings(settings),
            tls=tls,
            **common,
        )
    if settings["function_name"]:
        return AwsServerless(
            function_name=settings["function_name"],
            concurrency=settings["concurrency"],
            endpoint_url=settings["endpoint_url"] or None,
            **common,
        )
    return LocalServerless(
        image=settings["image"],
        runner=settings["runner"],
        owner=settings["name"],
        concurrency=settings["concurrency"],
        idle_timeout_s=settings["idle_timeout_s"],
        min_warm=settings["min_warm"],
        sharing=containers.Sharing.from_settings(settings),
        **common,
    )


class AdapterServer:
    """The platform, the gRPC server in front of it, and the heartbeats to the placer."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.platform = make_platform(settings)
        self.adapter = Adapter(self.platform, settings["instance_id"])
        self._servicer = InferenceServicer(self.adapter, address="")
        self._tls = tls_files(settings)
        self._tokens = None if self._tls else server_tokens(settings.get("tokens_file", ""))
        self._grpc = GrpcServer(
            settings["listen"],
            [
                lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(
                    self._servicer, s
                )
            ],
            [SERVICE_NAME],
            ACCESS,
            self._tokens,
            self._tls,
            # A thread per request in flight: as many as the platform may run, and some.
            max_workers=max(64, settings.get("concurrency", 0) + 16),
            max_message_bytes=20 * 1024 * 1024,
        )
        self._heartbeats = None

    def start(self) -> None:
        self._grpc.start()
        self._servicer.address = self.settings["advertise"] or self._grpc.address
        self.platform.start()
        self._grpc.mark_serving()
        if self.settings["placer"] != "off":
            self._heartbeats = Heartbeats(
                self.settings["placer"], self._servicer.report, tokens=self._tokens, tls=self._tls
            )
            self._heartbeats.start()
        if self.settings["port_file"]:
            write_port_file(self.settings["port_file"], {"grpc": self._grpc.port})
        log.info(
            "adapter serving",
            extra={
                "platform": self.settings["platform"],
                "instance_id": self.adapter.instance_id,
                "address": self._servicer.address,
            },
        )

    def stop(self, grace: float = 5.0) -> None:
        if self._heartbeats is not None:
            self._heartbeats.stop()
        self._grpc.stop(grace)
        self.platform.stop()


def main(argv: list[str] | None = None) -> int:
    try:
        settings = config.load(argv)
    except ConfigError as error:
        print(f"straightline-adapter: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(f"adapter-{settings['platform']}", settings["log_level"])
    provider = configure_tracing(f"straightline-adapter-{settings['platform']}")
    server, shutdown = AdapterServer(settings), ShutdownSignal()
    try:
        server.start()
    except ServiceError as error:
        log.error("cannot start: %s", error)
        server.stop(0)
        return 1
    shutdown.wait_then_stop(server.stop, provider)
    return 0


if __name__ == "__main__":
    sys.exit(main())

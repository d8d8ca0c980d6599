"""The adapter as a running server: the backend its configuration names, the core, the gRPC
server in front of it, and the heartbeats to the placer; start and stop."""

import logging

from straightline.v1 import inference_pb2_grpc
from straightline_common.auth import server_tokens
from straightline_common.grpcserver import GrpcServer
from straightline_common.metrics import serve_metrics
from straightline_common.processes import write_port_file
from straightline_common.tls import tls_files
from straightline_inference.adapter.backends import make_backend
from straightline_inference.adapter.config import AdapterConfig
from straightline_inference.adapter.core import Adapter
from straightline_inference.adapter.metrics import AdapterMetrics
from straightline_inference.adapter.servicer import ACCESS, SERVICE_NAME, InferenceServicer
from straightline_inference.heartbeat import Heartbeats

log = logging.getLogger(__name__)
_MAX_MESSAGE_BYTES = 20 * 1024 * 1024


class AdapterServer:
    def __init__(self, config: AdapterConfig) -> None:
        self.config = config
        self.backend = make_backend(config)
        self.metrics = AdapterMetrics(config.platform)
        self.metrics.watch_capacity(self.backend)
        self.adapter = Adapter(self.backend, config.instance_id, self.metrics)
        self._servicer = InferenceServicer(self.adapter, address="")
        self._tls = tls_files(vars(config))
        self._tokens = None if self._tls else server_tokens(config.tokens_file)
        self._grpc = GrpcServer(
            config.listen,
            [
                lambda s: inference_pb2_grpc.add_InferenceServiceServicer_to_server(
                    self._servicer, s
                )
            ],
            [SERVICE_NAME],
            ACCESS,
            self._tokens,
            self._tls,
            # A thread per request in flight: as many as the backend may run, and some.
            max_workers=max(64, config.concurrency + 16),
            max_message_bytes=_MAX_MESSAGE_BYTES,
        )
        self._heartbeats: Heartbeats | None = None
        self.metrics_port = 0

    def start(self) -> None:
        """Serves, starts the backend (its warm environments), then reports to the placer."""
        self._grpc.start()
        self._servicer.address = self.config.advertise or self._grpc.address
        self.backend.start()
        self.metrics_port = serve_metrics(self.metrics.registry, self.config.metrics_listen)
        self._grpc.mark_serving()
        if self.config.placer != "off":
            self._heartbeats = Heartbeats(
                self.config.placer,
                self._servicer.report,
                tokens=self._tokens,
                tls=self._tls,
                on_batching=self.adapter.take_batching,
            )
            self._heartbeats.start()
        if self.config.port_file:
            write_port_file(
                self.config.port_file, {"grpc": self._grpc.port, "metrics": self.metrics_port}
            )
        log.info(
            "adapter serving",
            extra={
                "platform": self.config.platform,
                "instance_id": self.adapter.instance_id,
                "address": self._servicer.address,
                "metrics_port": self.metrics_port,
            },
        )

    def stop(self, grace: float = 5.0) -> None:
        if self._heartbeats is not None:
            self._heartbeats.stop()
        self._grpc.stop(grace)
        self.backend.stop()

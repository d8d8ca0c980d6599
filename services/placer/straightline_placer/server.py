"""The placer as a running server: gRPC (PlacerService and the Open Inference Protocol on one
port; `Infer` and `ModelInfer` as coroutines on an asyncio server, the rest on its threads),
metrics, the sweep (instances whose heartbeats stopped, the policy file another placer
changed), start and stop."""

import logging
import threading

from inference import open_inference_grpc_pb2_grpc as oip_grpc
from straightline.v1 import placer_pb2_grpc
from straightline_common import oip_service
from straightline_common.aio_grpcserver import AsyncGrpcServer
from straightline_common.auth import server_tokens
from straightline_common.metrics import serve_metrics
from straightline_common.processes import write_port_file
from straightline_common.tls import tls_files
from straightline_placer import oip
from straightline_placer.config import PlacerConfig
from straightline_placer.core import Placer
from straightline_placer.forwarder import GrpcForwarder
from straightline_placer.metrics import PlacerMetrics
from straightline_placer.oip import OipServicer
from straightline_placer.policy import MAX_PAYLOAD_BYTES
from straightline_placer.servicer import ACCESS, SERVICE_NAME, PlacerServicer

log = logging.getLogger(__name__)

# How often instances whose heartbeats stopped are dropped (liveness itself is checked on
# every placement; the sweep closes their channels and updates the metrics).
_SWEEP_INTERVAL_S = 0.25
# The largest payload and the rest of an InferRequest; gRPC refuses a larger message with
# RESOURCE_EXHAUSTED and a sentence naming the limit.
_MAX_MESSAGE_BYTES = MAX_PAYLOAD_BYTES + 1024 * 1024
# A started placer's view fills as its adapters' heartbeats arrive (each within a heartbeat
# timeout): until then, up to this long, a request for a model not yet in view waits for it.
MAX_GATHERING_S = 5.0


class PlacerServer:
    def __init__(self, config: PlacerConfig) -> None:
        self.config = config
        self.metrics = PlacerMetrics()
        tls = tls_files(vars(config))
        tokens = None if tls else server_tokens(config.tokens_file)
        self._forwarder = GrpcForwarder(_MAX_MESSAGE_BYTES, tokens, tls)
        self.placer = Placer(
            config.policy,
            self._forwarder,
            self.metrics,
            gathering_s=min(config.policy.heartbeat_timeout_s, MAX_GATHERING_S),
        )
        self._stopping = threading.Event()
        self._servicer = PlacerServicer(
            self.placer, config.forward_timeout_s, self._stopping, config.policy_file
        )
        self._servicer.restore_policy()
        self._oip = OipServicer(self.placer, config.forward_timeout_s)
        self._grpc = AsyncGrpcServer(
            config.listen,
            [
                lambda server: placer_pb2_grpc.add_PlacerServiceServicer_to_server(
                    self._servicer, server
                ),
                lambda server: oip_grpc.add_GRPCInferenceServiceServicer_to_server(
                    self._oip, server
                ),
            ],
            [SERVICE_NAME, oip_service.SERVICE_NAME],
            {**ACCESS, **oip.ACCESS},
            tokens,
            tls,
            max_workers=config.max_workers,
            max_concurrent_rpcs=config.max_concurrent_rpcs,
            max_streams=config.max_streams,
            max_streams_per_peer=config.max_streams_per_peer,
            max_message_bytes=_MAX_MESSAGE_BYTES,
        )
        self._grpc.on_stop += [self.placer.aclose, self._forwarder.aclose]
        self._sweeper = threading.Thread(target=self._sweep, name="expiry-sweep", daemon=True)
        self.metrics_port = 0

    @property
    def address(self) -> str:
        return self._grpc.address

    def start(self) -> None:
        """Serves gRPC and metrics; reports SERVING once both are up."""
        self._grpc.start()
        self.metrics_port = serve_metrics(self.metrics.registry, self.config.metrics_listen)
        self._sweeper.start()
        self._grpc.mark_serving()
        if self.config.port_file:
            write_port_file(
                self.config.port_file, {"grpc": self._grpc.port, "metrics": self.metrics_port}
            )
        log.info(
            "placer serving",
            extra={
                "address": self.address,
                "metrics_port": self.metrics_port,
                "policy": vars(self.config.policy),
            },
        )

    def stop(self, grace: float = 5.0) -> None:
        """Stops taking RPCs, lets running ones finish for up to `grace` seconds, ends streams."""
        log.info("placer stopping", extra={"grace_s": grace})
        self._stopping.set()
        self._grpc.stop(grace)

    def _sweep(self) -> None:
        while not self._stopping.wait(_SWEEP_INTERVAL_S):
            self.placer.expire_instances()
            self._servicer.follow_policy_file()

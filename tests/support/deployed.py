"""A StraightLine stack brought up by a deployment tool (compose, Swarm) on this host's network:
its ports (free ones, in the variables of deploy/.env), credentials, data sets and environment,
and the wait until every service answers its health check."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc

from straightline_common import tls
from straightline_common.processes import health_status
from straightline_common.tls import TlsFiles
from straightline_inference.adapter.containers import free_ports
from tests.support.models import make_image_folders

PORT_NAMES = (
    *("PLACER", "PLACER_METRICS", "PLACER_2", "PLACER_2_METRICS"),
    *("ADAPTER_FLASK", "ADAPTER_DOCKER", "ADAPTER_SERVERLESS", "DEVRUNNER"),
)
# What answers gRPC health checks, in the order they come up.
SERVING = ("PLACER", "PLACER_2", "DEVRUNNER", "ADAPTER_FLASK", "ADAPTER_DOCKER")
SERVING += ("ADAPTER_SERVERLESS",)
ROOT = Path(__file__).resolve().parents[2]


class DeployedStack:
    def __init__(self, tmp_path: Path, otlp_port: int, **settings: str):
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.credentials = tmp_path / "credentials"
        certs = self.credentials / "certs"
        self.operator = TlsFiles(certs / "operator.pem", certs / "operator.key", certs / "ca.pem")
        self.datasets = tmp_path / "datasets"
        make_image_folders(self.datasets / "colours")
        self.suffix = uuid.uuid4().hex[:8]
        self.volume = f"straightline-test-models-{self.suffix}"
        self.env = {
            **os.environ,
            **{f"{name}_PORT": str(port) for name, port in self.ports.items()},
            "MODELS_VOLUME": self.volume,
            "OTLP_GRPC_PORT": str(otlp_port),
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "STRAIGHTLINE_DATASETS": str(self.datasets),
            "STRAIGHTLINE_CREDENTIALS": str(self.credentials),
            "FLASK_THREADS": "2",
            "DOCKER_MAX_CONTAINERS": "1",
            "SERVERLESS_CONCURRENCY": "3",
            **settings,
        }

    def call_as_operator(self, monkeypatch) -> None:
        """The stack is mutual TLS: this process calls it (health checks included) as its
        operator."""
        monkeypatch.setenv(tls.CERT_ENV, str(self.operator.cert))
        monkeypatch.setenv(tls.KEY_ENV, str(self.operator.key))
        monkeypatch.setenv(tls.CA_ENV, str(self.operator.ca))

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def logs(self) -> str:
        """What the services said, for a failure's message."""
        raise NotImplementedError

    def wait_healthy(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        for name in SERVING:
            while True:
                try:
                    if health_status(self.address(name)) == 1:  # SERVING
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} never became healthy:\n{self.logs()[-5000:]}")
                time.sleep(1)

    def run_demo(self) -> None:
        """The demo against this stack: trains, verifies and packages a model through its
        devrunner, then streams requests through both placers to all three platforms."""
        demo = subprocess.run(
            [sys.executable, "-m", "scripts.demo", "--compose"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        summary = demo.stdout[demo.stdout.index("platform     requests") :]
        for platform in ("flask", "docker", "serverless"):
            assert f"\n{platform} " in summary

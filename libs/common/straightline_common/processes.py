"""Services as local processes (the embedded default, tests, benchmarks), always stopped."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from straightline_common.channels import transport_channel


def dying_with_parent(command: list[str]) -> list[str]:
    """The command, run so that it gets SIGTERM when the thread that started it ends (with its
    process, even by SIGKILL): no child outlives a crashed parent. Uses util-linux's setpriv
    where present (a `preexec_fn` could deadlock a threaded parent between fork and exec).
    Start children from long-lived threads."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def write_port_file(path: str, ports: dict[str, int]) -> None:
    """Writes the bound ports as JSON, atomically: a reader never sees half a file."""
    with open(f"{path}.part", "w") as file:
        json.dump(ports, file)
    os.replace(f"{path}.part", path)


class ServiceProcess:
    """A service started with `python -m module ...`, bound to port 0, which writes its ports
    to a file once serving."""

    def __init__(
        self, module: str, args: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port_file = workdir / f"{module}.ports.json"
        self.log_path = workdir / f"{module}.log"
        self.port_file.unlink(missing_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            dying_with_parent(
                [sys.executable, "-m", module, *args, "--port-file", str(self.port_file)]
            ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.ports: dict[str, int] = {}

    def wait_ready(self, timeout: float = 15.0) -> "ServiceProcess":
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start:\n{self.log()}")
            time.sleep(0.05)
        self.ports = json.loads(self.port_file.read_text())
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def health_status(address: str, service: str = "") -> int:
    with transport_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)

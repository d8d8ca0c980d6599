"""MLServer (Seldon's Open Inference Protocol server, in its own virtual environment, made by
`make setup`) as a real process on loopback ports, serving a model of our store through the
custom runtime `tests/support/mlserver_runtime.py`: for the tests of the OIP platform and for
the peers benchmark."""

import json
import os
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from straightline_inference.adapter.containers import free_ports

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".venv-mlserver" / "bin" / "mlserver"


def peer_pythonpath() -> str:
    """The path of a peer's process (MLServer, BentoML, Ray Serve) run from its own virtual
    environment: its own packages first, then our model code and the project's environment
    (TensorFlow)."""
    path = [str(ROOT), *(str(ROOT / p) for p in ("libs/common", "services/inference"))]
    path.append(sysconfig.get_paths()["purelib"])
    return os.pathsep.join(path)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_mlserver(store_root: Path, model: str, workdir: Path) -> Iterator[dict[str, str]]:
    """MLServer serving `model` (version 1) of the store; yields its REST and gRPC URLs
    ({"rest": "http://...", "grpc": "grpc://..."}); stopped at the end."""
    assert MLSERVER.exists(), "MLServer is not installed: run `make setup`"
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port, metrics_port = free_ports(3)
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "metrics_endpoint": None,
        "parallel_workers": 0,
    }
    (workdir / "settings.json").write_text(json.dumps(settings))
    runtime = {
        "name": model,
        "implementation": "tests.support.mlserver_runtime.StoreModel",
        "parameters": {"uri": str(store_root), "version": "1"},
    }
    (workdir / "model-settings.json").write_text(json.dumps(runtime))
    env = {**os.environ, "PYTHONPATH": peer_pythonpath()}
    log = open(workdir / "mlserver.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(MLSERVER), "start", str(workdir)], cwd=workdir, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 120
        while not ready(url):
            assert process.poll() is None, (workdir / "mlserver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "MLServer did not become ready in 120 s"
            time.sleep(0.5)
        yield {"rest": url, "grpc": f"grpc://127.0.0.1:{grpc_port}"}
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

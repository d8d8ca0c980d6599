"""Any OIP server as a platform, proven with one this project did not write: MLServer (in its
own virtual environment, `make setup`), serving the store's model through a custom runtime,
behind an adapter of platform `oip` beside a Flask adapter, both under a real placer; once over
MLServer's REST API and once over its gRPC one. MLServer's REST API does not take the binary
tensor data extension, so the adapter talks plain JSON to it there."""

import json
import os
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scripts.localstack import set_policy
from straightline.v1 import (
    inference_pb2_grpc,
    placer_pb2,
    placer_pb2_grpc,
    types_pb2,
)
from straightline_common.auth import Role
from straightline_inference.adapter.containers import free_ports
from tests.e2e.test_oip_platform import tiny_metadata
from tests.support.models import image_bytes
from tests.support.stack import placer_process, wait_for_instances

pytestmark = pytest.mark.tensorflow
ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".venv-mlserver" / "bin" / "mlserver"
FLASK, OIP = types_pb2.PLATFORM_FLASK, types_pb2.PLATFORM_OIP


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory, model_store):
    """MLServer on loopback ports, serving `tiny` from the model store; stopped at the end."""
    assert MLSERVER.exists(), "MLServer is not installed: run `make setup`"
    workdir = tmp_path_factory.mktemp("mlserver")
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
    model = {
        "name": "tiny",
        "implementation": "tests.support.mlserver_runtime.StoreModel",
        "parameters": {"uri": str(model_store.root), "version": "1"},
    }
    (workdir / "model-settings.json").write_text(json.dumps(model))
    # MLServer's own packages first; the runtime's imports (ours, TensorFlow) after them.
    path = [str(ROOT), *(str(ROOT / p) for p in ("libs/common", "services/inference"))]
    path.append(sysconfig.get_paths()["purelib"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    log = open(workdir / "mlserver.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(MLSERVER), "start", str(workdir)], cwd=workdir, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{http_port}"
    urls = {"rest": url, "grpc": f"grpc://127.0.0.1:{grpc_port}"}
    try:
        deadline = time.monotonic() + 120
        while not ready(url):
            assert process.poll() is None, (workdir / "mlserver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "MLServer did not become ready in 120 s"
            time.sleep(0.5)
        yield urls
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module", params=["rest", "grpc"])
def stack(request, tmp_path_factory, start_adapter, mlserver, otlp_receiver):
    placer = placer_process(tmp_path_factory.mktemp("placer"), otlp_receiver.endpoint)
    try:
        placer.wait_ready()
        oip = start_adapter(
            *("oip", "--oip-url", mlserver[request.param], "--oip-models", "tiny"),
            placer=placer.address,
        )
        start_adapter("flask", "--threads", "1", placer=placer.address)
        yield placer, oip
    finally:
        placer.terminate()


def test_mlserver_behind_the_oip_platform_answers_as_flask_does(stack, channels):
    placer, _ = stack
    stub = placer_pb2_grpc.PlacerServiceStub(channels(placer.address))
    wait_for_instances(stub, 2)
    answers = {}
    for platform in (FLASK, OIP):
        set_policy(stub, pinned_platform=platform)
        request = placer_pb2.InferRequest(
            model=types_pb2.ModelRef(name="tiny"),
            payload=image_bytes(),
            content_type="image/jpeg",
            top_k=4,
        )
        answer = stub.Infer(request, timeout=60)
        assert answer.served_platform == platform
        answers[platform] = answer
    assert [c.label for c in answers[OIP].classes] == [c.label for c in answers[FLASK].classes]
    assert [c.score for c in answers[OIP].classes] == pytest.approx(
        [c.score for c in answers[FLASK].classes], abs=1e-5
    )


def test_the_oip_adapter_reports_mlservers_metadata(stack, channels):
    _, oip = stack
    stub = inference_pb2_grpc.InferenceServiceStub(channels(oip.address, Role.PLACER))
    metadata = tiny_metadata(stub)
    assert metadata.model.name == "tiny"
    assert metadata.format.startswith("oip (")

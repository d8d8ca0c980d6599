import pytest

from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import make_classifier
from tests.support.stack import adapter_process


@pytest.fixture(scope="session")
def model_store(tmp_path_factory):
    """A model store with one small classifier, `tiny` version 1 (32x32, four classes)."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    make_classifier(store, "tiny")
    return store


@pytest.fixture(scope="session")
def model_server(model_store, tmp_path_factory):
    """The model server as a real process (waitress, 2 threads) on free ports: REST, and the
    Open Inference Protocol over gRPC."""
    process = ServiceProcess(
        "straightline_inference.modelserver",
        [
            *("--store", str(model_store.root), "--listen", "127.0.0.1:0", "--threads", "2"),
            *("--grpc-listen", "127.0.0.1:0"),
        ],
        tmp_path_factory.mktemp("modelserver"),
    )
    try:
        yield process.wait_ready(timeout=60)
    finally:
        process.terminate()


@pytest.fixture(scope="module")
def start_adapter(tmp_path_factory, model_store, otlp_receiver):
    """Starts inference adapters as real processes on loopback port 0; stops them all at the
    end of the test module (a model server's cold start is seconds)."""
    tmp_path = tmp_path_factory.mktemp("adapters")
    started = []

    def start(platform: str, *args: str, placer="off", store=None, env=None) -> ServiceProcess:
        process = adapter_process(
            tmp_path / f"adapter-{len(started)}",
            platform,
            store or model_store.root,
            otlp_receiver.endpoint,
            *args,
            placer=placer,
            env=env,
        )
        started.append(process)
        return process.wait_ready(timeout=120)

    yield start
    for process in started:
        process.terminate(timeout=60)

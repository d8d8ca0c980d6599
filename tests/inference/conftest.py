import pytest

from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from tests.support.models import make_classifier


@pytest.fixture(scope="session")
def model_store(tmp_path_factory):
    """A model store with one small classifier, `tiny` version 1 (32x32, four classes)."""
    store = ModelStore(tmp_path_factory.mktemp("models"))
    make_classifier(store, "tiny")
    return store


@pytest.fixture(scope="session")
def model_server(model_store, tmp_path_factory):
    """The REST model server as a real process (waitress, 2 threads) on a free port."""
    process = ServiceProcess(
        "straightline_inference.modelserver",
        ["--store", str(model_store.root), "--listen", "127.0.0.1:0", "--threads", "2"],
        tmp_path_factory.mktemp("modelserver"),
    )
    try:
        yield process.wait_ready(timeout=60)
    finally:
        process.terminate()

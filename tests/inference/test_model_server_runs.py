"""What an adapter in front of StraightLine's model server reports about how it runs
requests: one batch at a time per environment when it batches any model, else side by side;
and a request's wait for its batch there counts as queueing, not as the model's service."""

import pytest

from straightline_common.modelstore import ModelStore
from straightline_inference.adapter.backend import ServesStore
from straightline_inference.adapter.modelserver_client import _queue_seconds


class _Store(ServesStore):
    def __init__(self, root):
        self._store = ModelStore(root)


def _add(store: ModelStore, tmp_path, name: str, serving) -> None:
    model_file = tmp_path / f"{name}.h5"
    model_file.write_bytes(b"not read here")
    metadata = {"class_names": ["a", "b"], "input_size": [32, 32], "format": "keras-h5"}
    if serving is not None:
        metadata["serving"] = serving
    store.add(name, model_file, metadata)


@pytest.mark.parametrize(
    ("servings", "runs"),
    [
        ([None], 1),  # the server's default batches (up to 8)
        ([{"max_batch_size": 1}], 0),
        ([{"max_batch_size": 1}, {"max_batch_size": 4}], 1),
        ([{"max_batch_size": 1}, "not a table", {"max_batch_size": 0}], 0),  # not served
        ([], 0),
    ],
)
def test_runs_per_environment_follow_the_models_batching(tmp_path, servings, runs):
    root = tmp_path / "store"
    for index, serving in enumerate(servings):
        _add(ModelStore(root), tmp_path, f"m{index}", serving)
    assert _Store(root).model_server_runs() == runs


@pytest.mark.parametrize(
    ("timings", "queued"),
    [
        ({"queue_ms": 30.0, "inference_ms": 80.0}, 0.03),
        ({"queue_ms": 500.0}, 0.1),  # never more than the call took
        ({"inference_ms": 80.0}, 0.0),  # a server that predates queue_ms
        ({"queue_ms": -5}, 0.0),
        ({"queue_ms": "soon"}, 0.0),
        ("not a table", 0.0),
    ],
)
def test_the_model_servers_batch_wait_is_queueing_not_service(timings, queued):
    assert _queue_seconds({"timings": timings}, elapsed=0.1) == pytest.approx(queued)

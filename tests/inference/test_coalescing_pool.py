"""The Docker platform's opt-in coalescing, on its pool of model servers: requests for one model
that find every slot taken go to one model server in one call. The model server here is the
real one, as a local process (the container's own entry point); its environment in the pool is
that server, reached by the real HTTP client, which counts the calls it sends."""

import threading
from concurrent import futures
from dataclasses import dataclass

import pytest

from straightline_common.errors import InvalidArgument
from straightline_inference.adapter.backend import PredictCall
from straightline_inference.adapter.coalescer import Batching
from straightline_inference.adapter.containers import Sharing
from straightline_inference.adapter.modelserver_client import ModelServerClient
from straightline_inference.adapter.pooled_backend import ModelServerPool, PoolSettings
from tests.support.models import image_bytes
from tests.support.waiting import wait_until

pytestmark = pytest.mark.tensorflow
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 30)]


class CountingClient(ModelServerClient):
    """The real client, counting the calls by path."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, connections=4)
        self.calls: list[str] = []

    def send(self, method, path, timeout, **options):
        if method == "POST":
            self.calls.append(path.partition("?")[0])
        return super().send(method, path, timeout, **options)


@dataclass
class Server:
    client: CountingClient


class ModelServers(ModelServerPool):
    """One model server, one slot, four places in the queue."""

    def __init__(self, client: CountingClient, store, batching: Batching) -> None:
        settings = PoolSettings(
            max_environments=1,
            slots_per_environment=1,
            queue_limit=4,
            idle_timeout_s=60,
            min_environments=1,
        )
        super().__init__(
            batching=batching,
            store=str(store),
            image="",
            owner="",
            sharing=Sharing(),
            pool=settings,
        )
        self._client = client

    def start(self) -> None:
        self._open_pool(lambda: Server(self._client), lambda _s: None, lambda _s: None, "test")


@pytest.fixture
def servers(model_server, model_store):
    client = CountingClient(f"http://127.0.0.1:{model_server.ports['http']}")
    backend = ModelServers(client, model_store.root, Batching(size=4, delay_s=0.5))
    backend.start()
    yield backend, client
    backend.stop()


def call(colour, request_id="r", payload=None, top_k=2) -> PredictCall:
    image = image_bytes(colour) if payload is None else payload
    return PredictCall(request_id, "tiny", "", image, "image/jpeg", top_k)


def labels(answer):
    return [(c["label"], c["index"]) for c in answer.classes]


def scores(*answers):
    return [c["score"] for answer in answers for c in answer.classes]


def while_the_slot_is_held(backend, calls, expected_queue):
    """Sends `calls` at once while the test holds the only slot; lets it go once all of them
    wait (`expected_queue` in the queue the adapter reports); their answers or errors."""
    release = threading.Event()

    def hold():
        with backend._started_pool().lease(5):
            release.wait(10)

    def predict(one):
        try:
            return backend.predict(one, 30)
        except Exception as error:  # the test looks at which
            return error

    with futures.ThreadPoolExecutor(1 + len(calls)) as pool:
        holder = pool.submit(hold)
        assert wait_until(lambda: backend.capacity().free == 0)
        answers = [pool.submit(predict, one) for one in calls]
        assert wait_until(lambda: backend.capacity().queue_depth == expected_queue)
        release.set()
        holder.result(10)
        return [answer.result(30) for answer in answers]


def test_a_request_that_finds_a_free_slot_goes_at_once_alone(servers):
    backend, client = servers
    answer = backend.predict(call(COLOURS[0]), 30)
    assert client.calls == ["/v1/models/tiny/predict"]
    assert len(answer.classes) == 2


def test_requests_that_find_every_slot_taken_go_in_one_call_each_with_its_own_answer(servers):
    backend, client = servers
    alone = [backend.predict(call(colour, top_k=3), 30) for colour in COLOURS]
    client.calls.clear()
    # The group's leader waits for a slot in the pool's queue, the three others for it: all
    # four are reported queued.
    answers = while_the_slot_is_held(
        backend, [call(colour, f"r{i}", top_k=3) for i, colour in enumerate(COLOURS)], 4
    )
    assert client.calls == ["/v2/models/tiny/infer"]
    assert [labels(a) for a in answers] == [labels(a) for a in alone]
    assert scores(*answers) == pytest.approx(scores(*alone), abs=1e-5)
    assert [a.model["name"] for a in answers] == ["tiny"] * 4
    assert all(a.queue_seconds > 0 for a in answers)
    assert backend.capacity().queue_depth == 0


def test_an_image_the_model_cannot_read_fails_only_its_own_request(servers):
    backend, client = servers
    calls = [call(COLOURS[0], "good-1"), call(None, "bad", payload=b"not an image"),
             call(COLOURS[1], "good-2")]  # fmt: skip
    answers = while_the_slot_is_held(backend, calls, 3)
    assert isinstance(answers[1], InvalidArgument)
    assert [len(answers[0].classes), len(answers[2].classes)] == [2, 2]
    # The group's call failed; then each request went on its own.
    assert client.calls[0] == "/v2/models/tiny/infer"
    assert client.calls[1:] == ["/v1/models/tiny/predict"] * 3

"""The model server's adaptive batcher, with a forward pass that records the batches it gets
(each image's answer is its own pixel sum, so a mixed-up answer shows)."""

import threading
import time

import numpy as np
import pytest

from straightline_common.errors import InvalidArgument
from straightline_inference.batching import BatchCeiling, Batcher, BatchSettings


class Model:
    def __init__(self, seconds: float = 0.0, fail: bool = False):
        self.batches: list[int] = []
        self.seconds, self.fail = seconds, fail
        self.running = threading.Event()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        self.running.set()
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("the model failed")
        return images.reshape(len(images), -1).sum(axis=1, keepdims=True)


def image(value: float) -> np.ndarray:
    return np.full((2, 2, 3), value, np.float32)


def run(batcher: Batcher, value: float, ceiling: BatchCeiling | None = None):
    with batcher.expect(ceiling) as submit:
        return submit(image(value))


def in_threads(batcher: Batcher, values, ceiling=None) -> dict[float, object]:
    answers: dict[float, object] = {}

    def one(value):
        try:
            answers[value] = run(batcher, value, ceiling)
        except Exception as error:  # the test looks at it
            answers[value] = error

    threads = [threading.Thread(target=one, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    return answers, threads


def test_a_request_alone_runs_at_once_in_a_batch_of_one():
    model = Model()
    batcher = Batcher(model, BatchSettings(max_batch_size=8, max_queue_delay_s=0.5))
    started = time.perf_counter()
    answer = run(batcher, 1.0)
    assert time.perf_counter() - started < 0.1  # the 0.5 s delay was not waited
    assert (answer.batch_size, float(answer.scores[0])) == (1, 12.0)
    assert model.batches == [1]


def test_requests_that_arrive_while_a_batch_runs_go_together_in_the_next():
    model = Model(seconds=0.3)
    batcher = Batcher(model, BatchSettings(max_batch_size=8, max_queue_delay_s=0.0))
    _, first_threads = in_threads(batcher, [1.0])
    assert model.running.wait(5)
    rest, threads = in_threads(batcher, [2.0, 3.0, 4.0])
    for thread in first_threads + threads:
        thread.join(10)
    assert model.batches == [1, 3]
    assert {v: float(a.scores[0]) for v, a in rest.items()} == {2.0: 24.0, 3.0: 36.0, 4.0: 48.0}
    assert {a.batch_size for a in rest.values()} == {3}
    assert all(a.queue_seconds > 0.1 for a in rest.values())  # they waited for the first


def test_a_batch_is_never_larger_than_its_maximum():
    model = Model(seconds=0.2)
    batcher = Batcher(model, BatchSettings(max_batch_size=2, max_queue_delay_s=0.0))
    _, first = in_threads(batcher, [1.0])
    assert model.running.wait(5)
    answers, threads = in_threads(batcher, [2.0, 3.0, 4.0, 5.0, 6.0])
    for thread in first + threads:
        thread.join(10)
    assert model.batches[0] == 1 and max(model.batches) == 2 and sum(model.batches) == 6
    assert sorted(float(a.scores[0]) for a in answers.values()) == [24.0, 36.0, 48.0, 60.0, 72.0]


@pytest.mark.parametrize(
    ("server", "ceiling", "largest"),
    [
        (8, BatchCeiling(max_batch_size=2), 2),  # the policy's ceiling under the server's 8
        (2, BatchCeiling(max_batch_size=8), 2),  # a ceiling never raises the model's own
        (8, BatchCeiling(max_batch_size=1), 1),  # 1: batching off
    ],
)
def test_a_ceiling_bounds_the_batches_its_requests_lead(server, ceiling, largest):
    model = Model(seconds=0.2)
    batcher = Batcher(model, BatchSettings(max_batch_size=server, max_queue_delay_s=0.0))
    _, first = in_threads(batcher, [1.0], ceiling)
    assert model.running.wait(5)
    answers, threads = in_threads(batcher, [2.0, 3.0, 4.0, 5.0, 6.0], ceiling)
    for thread in first + threads:
        thread.join(10)
    assert max(model.batches) == largest and sum(model.batches) == 6
    assert sorted(float(a.scores[0]) for a in answers.values()) == [24.0, 36.0, 48.0, 60.0, 72.0]


def test_a_ceiling_on_the_delay_stops_the_leader_waiting():
    model = Model()
    batcher = Batcher(model, BatchSettings(max_batch_size=8, max_queue_delay_s=1.0))
    decoded = threading.Event()
    with batcher.expect() as submit_late:  # announced, decoding for 0.5 s
        threading.Timer(0.5, decoded.set).start()
        started = time.perf_counter()
        answer = run(batcher, 1.0, BatchCeiling(max_queue_delay_s=0.0))
        waited = time.perf_counter() - started
        decoded.wait(5)
        submit_late(image(2.0))
    assert waited < 0.3 and answer.batch_size == 1
    assert model.batches == [1, 1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_batch_size": 257}, "max_batch_size must be between 1 and 256"),
        ({"max_queue_delay_s": 2.0}, "max_queue_delay must be between 0 and 1000 ms"),
    ],
)
def test_ceilings_out_of_range_are_refused(fields, message):
    with pytest.raises(InvalidArgument, match=message):
        BatchCeiling(**fields)


@pytest.mark.parametrize(("delay", "batches"), [(1.0, [2]), (0.0, [1, 1])])
def test_the_leader_waits_for_a_request_still_decoding_but_no_longer_than_the_delay(delay, batches):
    model = Model()
    batcher = Batcher(model, BatchSettings(max_batch_size=8, max_queue_delay_s=delay))
    decoded = threading.Event()
    late = {}

    def decoding_slowly():
        with batcher.expect() as submit:
            decoded.wait(5)
            late["answer"] = submit(image(2.0))

    slow = threading.Thread(target=decoding_slowly)
    slow.start()
    time.sleep(0.05)  # it has announced itself
    threading.Timer(0.1, decoded.set).start()
    answer = run(batcher, 1.0)
    slow.join(10)
    assert model.batches == batches, delay
    assert float(answer.scores[0]) == 12.0 and float(late["answer"].scores[0]) == 24.0


def test_a_request_whose_image_does_not_decode_is_not_waited_for():
    model = Model()
    batcher = Batcher(model, BatchSettings(max_batch_size=8, max_queue_delay_s=1.0))
    with pytest.raises(ValueError), batcher.expect():
        raise ValueError("not an image")
    started = time.perf_counter()
    assert run(batcher, 1.0).batch_size == 1
    assert time.perf_counter() - started < 0.5


def test_a_model_error_reaches_every_request_of_its_batch_and_the_next_batch_runs():
    model = Model(seconds=0.2, fail=True)
    batcher = Batcher(model, BatchSettings(max_batch_size=8, max_queue_delay_s=0.0))
    answers, threads = in_threads(batcher, [1.0, 2.0, 3.0])
    for thread in threads:
        thread.join(10)
    assert all(isinstance(a, RuntimeError) for a in answers.values())
    model.fail = False
    assert float(run(batcher, 4.0).scores[0]) == 48.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be between 1 and 256"),
        ({"max_batch_size": 257}, "max_batch_size must be between 1 and 256"),
        ({"max_queue_delay_s": -0.001}, "max_queue_delay must be between 0 and 1000 ms"),
        ({"max_queue_delay_s": float("nan")}, "max_queue_delay must be between 0 and 1000 ms"),
    ],
)
def test_settings_out_of_range_are_refused(fields, message):
    with pytest.raises(InvalidArgument, match=message):
        BatchSettings(**fields)


# With a real Keras model ------------------------------------------------------------------------


@pytest.mark.tensorflow
def test_a_keras_model_answers_a_batch_as_it_answers_each_image_alone(model_store, spans):
    from straightline_inference.model import LoadedModel
    from tests.support.models import image_bytes

    version = model_store.resolve("tiny")
    alone = LoadedModel(version, BatchSettings(max_batch_size=1))
    batched = LoadedModel(version, BatchSettings(max_batch_size=8, max_queue_delay_s=0.05))
    images = [image_bytes(colour=(20 * i, 200 - 20 * i, 90)) for i in range(8)]
    expected = [alone.predict(data, "image/jpeg", top_k=4).classes for data in images]
    spans.clear()
    answers: dict[int, list] = {}

    def one(i):
        answers[i] = batched.predict(images[i], "image/jpeg", top_k=4).classes

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, classes in answers.items():
        assert [c.label for c in classes] == [c.label for c in expected[i]]
        assert [c.score for c in classes] == pytest.approx([c.score for c in expected[i]], abs=1e-5)
    infers = [s for s in spans.get_finished_spans() if s.name == "model.infer"]
    sizes = [s.attributes["model.batch_size"] for s in infers]
    assert len(sizes) == 8 and max(sizes) > 1  # some images went through together


@pytest.mark.tensorflow
def test_a_models_own_serving_settings_override_the_servers_and_bad_ones_are_refused(tmp_path):
    import json

    from straightline_common.errors import FailedPrecondition
    from straightline_common.modelstore import METADATA_FILE, ModelStore
    from straightline_inference.model import ModelSet
    from tests.support.models import make_classifier

    store = ModelStore(tmp_path / "models")
    for name, serving in (("own", {"max_batch_size": 2, "max_queue_delay_ms": 7}),
                          ("bad", {"max_batch_size": 0})):  # fmt: skip
        metadata_file = make_classifier(store, name).directory / METADATA_FILE
        metadata = json.loads(metadata_file.read_text())
        metadata_file.write_text(json.dumps({**metadata, "serving": serving}))
    models = ModelSet(store, batching=BatchSettings(max_batch_size=8, max_queue_delay_s=0.002))
    assert models.get("own").batching == BatchSettings(max_batch_size=2, max_queue_delay_s=0.007)
    with pytest.raises(FailedPrecondition, match="max_batch_size must be between 1 and 256"):
        models.get("bad")

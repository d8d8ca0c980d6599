"""A Keras model loaded for serving: decode, predict, top-k. Shared by every front door."""

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from opentelemetry import trace

from straightline_common.errors import FailedPrecondition, InvalidArgument, NotFound
from straightline_common.modelstore import ModelStore, ModelVersion
from straightline_common.names import check_model
from straightline_inference import imaging
from straightline_inference.batching import (
    DEFAULT_BATCHING,
    BatchCeiling,
    Batcher,
    BatchSettings,
    model_batching,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("straightline.model")
DEFAULT_TOP_K = 5
MAX_TOGETHER = 64  # images run at once for one request (an OIP tensor, a Lambda batch)
_together = ThreadPoolExecutor(MAX_TOGETHER, thread_name_prefix="together")
Item = TypeVar("Item")
Result = TypeVar("Result")


def run_together(run: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """`run` on every item at once, each on a thread of its own (in the caller's trace
    context), so that their images meet at the model, whose batcher runs them together; one
    item runs on the caller's thread. The first error is raised, after every item ran."""
    if len(items) == 1:
        return [run(items[0])]
    futures = [_together.submit(contextvars.copy_context().run, run, item) for item in items]
    return [future.result() for future in futures]


@dataclass(frozen=True)
class ClassScore:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class Prediction:
    name: str
    version: str
    classes: list[ClassScore]
    decode_seconds: float
    inference_seconds: float  # its batch's wait included
    queue_seconds: float = 0.0  # of the inference, the wait for its batch to start


class LoadedModel:
    """One model version, loaded and warmed up; `predict` is safe from many threads."""

    def __init__(self, version: ModelVersion, batching: BatchSettings = DEFAULT_BATCHING) -> None:
        import tensorflow as tf  # imported here: the adapter and placer never need it

        self.version = version
        self.class_names = version.class_names
        self.input_size = version.input_size
        started = time.perf_counter()
        keras_model = tf.keras.models.load_model(version.model_path, compile=False)
        height, width = self.input_size
        # A tf.function with a fixed signature: one graph, no retracing, 1.5-2x faster than
        # predict() or an eager call for single images.
        self._forward = tf.function(
            lambda images: keras_model(images, training=False),
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)],
            reduce_retracing=True,
        )
        self._forward(np.zeros((1, height, width, 3), np.float32))  # warm-up: build the graph
        self.batching = model_batching(version.metadata, batching)
        self._batcher = Batcher(lambda images: self._forward(images).numpy(), self.batching)
        self.load_seconds = time.perf_counter() - started
        log.info(
            "model loaded",
            extra={
                "model": version.name,
                "version": version.version,
                "load_seconds": round(self.load_seconds, 3),
            },
        )

    def predict(
        self,
        data: bytes,
        content_type: str,
        top_k: int = 0,
        ceiling: BatchCeiling | None = None,
    ) -> Prediction:
        """`ceiling`: bounds on the batch this request leads, under the model's own."""
        top_k = _check_top_k(top_k, len(self.class_names))
        started = time.perf_counter()
        with self._batcher.expect(ceiling) as through_model:
            with tracer.start_as_current_span(
                "model.decode", attributes={"image.bytes": len(data)}
            ):
                pixels = imaging.decode(data, content_type, self.input_size)
            decoded = time.perf_counter()
            with tracer.start_as_current_span(
                "model.infer",
                attributes={"model.name": self.version.name, "model.version": self.version.version},
            ) as span:
                batched = through_model(pixels)
                span.set_attribute("model.batch_size", batched.batch_size)
        probabilities = batched.scores
        finished = time.perf_counter()
        best = np.argsort(probabilities)[::-1][:top_k]
        classes = [ClassScore(self.class_names[i], int(i), float(probabilities[i])) for i in best]
        return Prediction(
            self.version.name,
            self.version.version,
            classes,
            decoded - started,
            finished - decoded,
            batched.queue_seconds,
        )


def _check_top_k(top_k: int, classes: int) -> int:
    if top_k < 0:
        raise InvalidArgument(f"top_k must be 0 (the default, {DEFAULT_TOP_K}) or positive")
    return min(top_k or DEFAULT_TOP_K, classes)


class ModelSet:
    """The model versions one server serves, loaded and warmed at start.

    With `wanted` entries ("name" or "name:version") it serves exactly those. Without, it
    serves the store as it grows: a request for a model or version it has not loaded looks
    in the store again and loads what has appeared since (that request pays the load), the
    way a model server follows its model base path; an empty store is fine to start with.

    `batching` is every model's adaptive batching unless its metadata says otherwise.

    A version whose files cannot be loaded (missing, corrupt) is left out and logged; the
    others serve. A request for it gets FAILED_PRECONDITION naming the cause, and looks in
    the store again, so a restored file serves from the next request on.
    """

    def __init__(
        self,
        store: ModelStore,
        wanted: list[str] | None = None,
        batching: BatchSettings = DEFAULT_BATCHING,
    ) -> None:
        self._batching = batching
        self._store = store
        self._follows_store = not wanted
        versions = [store.resolve(*_split(entry)) for entry in wanted] if wanted else store.latest()
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._broken: dict[tuple[str, str], str] = {}  # (name, version) -> why not loaded
        self._lock = threading.Lock()
        self._add(versions)

    def refs(self) -> list[tuple[str, str]]:
        return sorted(self._models)

    def get(self, name: str, version: str = "") -> LoadedModel:
        name, version = check_model(name, version)
        model = self._find(name, version)
        if model is None and self._follows_store:
            with self._lock:  # one loader at a time; the others then find what it loaded
                fresh = [v for v in self._store.latest() if (v.name, v.version) not in self._models]
                if version and (name, version) not in self._models:
                    fresh.append(self._store.resolve(name, version))  # NotFound if absent
                self._add(fresh)
            model = self._find(name, version)
        if model is None:
            self._raise_if_broken(name, version)
            served = ", ".join(f"{n}:{v}" for n, v in self.refs()) or "none"
            wanted = f"{name}:{version}" if version else name
            raise NotFound(f"model {wanted} is not served here; served: {served}")
        return model

    def _find(self, name: str, version: str) -> LoadedModel | None:
        if version:
            return self._models.get((name, version))
        versions = [v for n, v in self._models if n == name]
        return self._models[(name, max(versions, key=int))] if versions else None

    def _raise_if_broken(self, name: str, version: str) -> None:
        for (broken_name, broken_version), cause in self._broken.items():
            if broken_name == name and (not version or broken_version == version):
                raise FailedPrecondition(cause)

    def _add(self, versions: list[ModelVersion]) -> None:
        loaded = {}
        for version in {v.directory: v for v in versions}.values():
            key = (version.name, version.version)
            try:
                loaded[key] = LoadedModel(version, self._batching)
            except Exception as error:  # any failure to load: missing, corrupt, foreign files
                self._broken[key] = _cannot_load(version, error)
                log.error("model not loaded", extra={"cause": self._broken[key]})
            else:
                self._broken.pop(key, None)
        self._models = {**self._models, **loaded}  # readers see the old or the new dict


def _cannot_load(version: ModelVersion, error: Exception) -> str:
    detail = str(error).splitlines()[0][:200] if str(error) else ""
    return (
        f"model {version.name} version {version.version} cannot be loaded from the store "
        f"({type(error).__name__}: {detail}); restore its files or package it again"
    )


def _split(entry: str) -> tuple[str, str]:
    name, _, version = entry.partition(":")
    return name, version

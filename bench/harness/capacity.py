"""What the machine can do with a model: the physical limit (cores / the time one image
takes through the model, measured in-process) and the rate the whole stack sustains with
the placer in front (closed loop: as many callers as the platforms have slots)."""

import os
import threading
import time

from bench import report
from straightline.v1 import placer_pb2, types_pb2


def physical_limit(store, model: str, image: bytes, content_type: str, n: int = 30) -> dict:
    from straightline_inference.model import LoadedModel

    loaded = LoadedModel(store.resolve(model))
    loaded.predict(image, content_type)  # the first call builds the graph: not timed
    started = time.perf_counter()
    for _ in range(n):
        loaded.predict(image, content_type)
    per_image = (time.perf_counter() - started) / n
    cores = os.cpu_count() or 1
    return {
        "per_image_ms": round(per_image * 1e3, 1),
        "cores": cores,
        "limit_rps": round(cores / per_image, 1),
    }


def sustained(stub, model: str, image: bytes, content_type: str, callers: int, seconds: float):
    """Requests per second answered through the placer with `callers` closed-loop clients."""
    request = placer_pb2.InferRequest(
        model=types_pb2.ModelRef(name=model), payload=image, content_type=content_type
    )
    answered, failed = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def call_until_deadline():
        while time.monotonic() < deadline:
            try:
                stub.Infer(request, timeout=60)
                outcome = answered
            except Exception:
                outcome = failed
            with lock:
                outcome[0] += 1

    elapsed = report.run_together(lambda _: call_until_deadline(), callers)
    return {
        "callers": callers,
        "rps": round(answered[0] / elapsed, 1),
        "failures": failed[0],
    }

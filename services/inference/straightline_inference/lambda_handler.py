"""The serverless front door: the same decode-and-predict path as the REST app, as an AWS
Lambda handler (`straightline_inference.lambda_handler.handler`, on awslambdaric).

Importing the module is Lambda's init phase: the models are loaded and warmed there, so the
first invocation of an execution environment pays the cold start once.

Event:  {"request_id", "model": {"name", "version"}, "payload_b64", "content_type", "top_k"}
        or {"batch": [such events]} (at most 64: the adapter's opt-in batching), each image
        decoded on its own thread and the images run through the model together,
        or {"warmup": true}, which only makes sure the environment is initialised,
        or {"model": {"name", "version"}, "oip": <an Open Inference Protocol infer request,
        JSON>} (BYTES elements base64; `straightline_inference.oip_json`).
Answer: {"model": {...}, "classes": [{"label", "index", "score"}], "timings": {...}}
        or, to a batch, {"batch": [such answers, or {"error": ...} for an item's bad input]}
        or, to an OIP event, the protocol's infer response (JSON),
        or {"error": {"code", "message"}} for bad input (INVALID_ARGUMENT, NOT_FOUND).
Any other failure raises, and Lambda reports it as a function error.
Trace context travels in the invocation's client context: {"custom": {"traceparent": ...}}.
With STRAIGHTLINE_MODEL_S3_URL, versions missing from STRAIGHTLINE_MODEL_STORE are fetched
from S3 into it (on AWS, point the store at /tmp/models: the image is read-only there).
"""

import base64
import binascii
import json
import os
import time
from typing import Any

from opentelemetry import propagate, trace

from straightline_common import errors
from straightline_common.logs import configure_logging
from straightline_common.modelstore import open_store
from straightline_common.telemetry import configure_tracing
from straightline_inference import oip_json
from straightline_inference.model import MAX_TOGETHER, ModelSet, run_together

configure_logging("lambda", os.environ.get("STRAIGHTLINE_LOG_LEVEL", "info"))
_tracer_provider = configure_tracing("straightline-lambda")
_started = time.perf_counter()
_MODELS = ModelSet(
    open_store(
        os.environ.get("STRAIGHTLINE_MODEL_STORE", "/models"),
        os.environ.get("STRAIGHTLINE_MODEL_S3_URL", ""),
    ),
    [m for m in os.environ.get("STRAIGHTLINE_MODELS", "").split(",") if m] or None,
)
INIT_SECONDS = time.perf_counter() - _started
tracer = trace.get_tracer("straightline.lambda")
MAX_BATCH = MAX_TOGETHER


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    if event.get("warmup"):
        return {"warm": True, "init_seconds": INIT_SECONDS}
    carrier = dict(getattr(getattr(context, "client_context", None), "custom", None) or {})
    try:
        with tracer.start_as_current_span(
            "lambda.invoke", context=propagate.extract(carrier), kind=trace.SpanKind.SERVER
        ):
            if "batch" in event:
                return _predict_batch(event["batch"])
            return _answered(_infer_oip if "oip" in event else _predict, event)
    finally:
        if _tracer_provider is not None:
            _tracer_provider.force_flush(1000)  # the environment may freeze after return


def _answered(run: Any, event: dict[str, Any]) -> dict[str, Any]:
    """`run(event)`'s answer, or the error an input the caller must fix gets."""
    try:
        answer: dict[str, Any] = run(event)
        return answer
    except (errors.InvalidArgument, errors.NotFound) as error:
        return {"error": {"code": errors.code_name(error), "message": str(error)}}


def _predict_batch(items: Any) -> dict[str, Any]:
    """Every item at once: their images meet at the model, whose batcher runs them together."""
    if not (isinstance(items, list) and 1 <= len(items) <= MAX_BATCH):
        return _answered(_refuse, {"why": f"batch must be a list of 1 to {MAX_BATCH} requests"})
    return {"batch": run_together(_predict_item, items)}


def _predict_item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return _answered(_refuse, {"why": "each request of a batch must be an object"})
    return _answered(_predict, item)


def _refuse(event: dict[str, Any]) -> dict[str, Any]:
    raise errors.InvalidArgument(event["why"])


def _infer_oip(event: dict[str, Any]) -> dict[str, Any]:
    """An OIP infer request in the event (JSON: no binary extension in a Lambda event)."""
    model_ref = event.get("model") or {}
    model = _MODELS.get(model_ref.get("name", ""), model_ref.get("version", ""))
    body, _ = oip_json.infer(model, json.dumps(event["oip"]).encode(), None)
    answer: dict[str, Any] = json.loads(body)
    return answer


def _predict(event: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    model_ref = event.get("model") or {}
    try:
        data = base64.b64decode(event.get("payload_b64", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise errors.InvalidArgument("payload_b64 is not valid base64") from None
    model = _MODELS.get(model_ref.get("name", ""), model_ref.get("version", ""))
    prediction = model.predict(data, event.get("content_type", ""), int(event.get("top_k", 0)))
    return {
        "model": {"name": prediction.name, "version": prediction.version},
        "classes": [vars(c) for c in prediction.classes],
        "timings": {
            "decode_ms": prediction.decode_seconds * 1e3,
            "inference_ms": prediction.inference_seconds * 1e3,
            "total_ms": (time.perf_counter() - started) * 1e3,
        },
    }

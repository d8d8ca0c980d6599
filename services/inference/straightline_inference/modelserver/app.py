"""The Flask REST app of the model server.

    POST /v1/models/<name>/predict[?top_k=N]                 body: the image; Content-Type
    POST /v1/models/<name>/versions/<version>/predict[?top_k=N]
         [&max_batch_size=N&max_queue_delay_ms=MS]           ceilings on the batch it leads
    GET  /v1/models                                          the models served
    GET  /v1/models/<name>[/versions/<version>]             metadata
    GET  /healthz                                            200 once the models are warm

and the Open Inference Protocol's REST API (KServe v2; `straightline_inference.oip_json`):

    GET  /v2/health/live    GET /v2/health/ready
    GET  /v2/models/<name>[/versions/<version>]             metadata
    GET  /v2/models/<name>[/versions/<version>]/ready       200 ready, 404 not served
    POST /v2/models/<name>[/versions/<version>]/infer       JSON, or the binary extension

Answers are JSON; errors are {"error": {"code": ..., "message": ...}} with a 4xx or 5xx (on
/v2, the protocol's {"error": "<sentence>"}). A `traceparent` header continues the caller's
trace.
"""

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from opentelemetry import propagate, trace
from werkzeug.exceptions import HTTPException

from straightline_common import errors
from straightline_inference import oip_json
from straightline_inference.batching import BatchCeiling
from straightline_inference.imaging import MAX_IMAGE_BYTES
from straightline_inference.model import ModelSet

tracer = trace.get_tracer("straightline.modelserver")

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,  # the model's files cannot be loaded
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}


def create_app(models: ModelSet) -> Flask:
    app = Flask("straightline-modelserver")
    app.config["MAX_CONTENT_LENGTH"] = MAX_IMAGE_BYTES

    @app.post("/v1/models/<name>/predict")
    @app.post("/v1/models/<name>/versions/<version>/predict")
    def predict(name: str, version: str = "") -> ResponseReturnValue:
        arrived = time.perf_counter()
        with _server_span():
            top_k = _top_k(request.args.get("top_k", "0"))
            model = models.get(name, version)
            prediction = model.predict(
                request.get_data(), request.content_type or "", top_k, _ceiling(request.args)
            )
            return jsonify(
                model={"name": prediction.name, "version": prediction.version},
                classes=[vars(c) for c in prediction.classes],
                timings={
                    "decode_ms": prediction.decode_seconds * 1e3,
                    "inference_ms": prediction.inference_seconds * 1e3,
                    "queue_ms": prediction.queue_seconds * 1e3,
                    "total_ms": (time.perf_counter() - arrived) * 1e3,
                },
            )

    @app.get("/v1/models")
    def list_models() -> ResponseReturnValue:
        return jsonify(models=[{"name": n, "version": v} for n, v in models.refs()])

    @app.get("/v1/models/<name>")
    @app.get("/v1/models/<name>/versions/<version>")
    def metadata(name: str, version: str = "") -> ResponseReturnValue:
        return jsonify(models.get(name, version).version.metadata)

    @app.get("/healthz")
    def health() -> ResponseReturnValue:
        return jsonify(status="SERVING")

    @app.get("/v2")
    def oip_server_metadata() -> ResponseReturnValue:
        return jsonify(oip_json.server_metadata())

    @app.get("/v2/health/live")
    def oip_live() -> ResponseReturnValue:
        return jsonify(live=True)

    @app.get("/v2/health/ready")
    def oip_ready() -> ResponseReturnValue:
        return jsonify(ready=True)

    @app.get("/v2/models/<name>")
    @app.get("/v2/models/<name>/versions/<version>")
    def oip_metadata(name: str, version: str = "") -> ResponseReturnValue:
        return jsonify(oip_json.metadata(models.get(name, version)))

    @app.get("/v2/models/<name>/ready")
    @app.get("/v2/models/<name>/versions/<version>/ready")
    def oip_model_ready(name: str, version: str = "") -> ResponseReturnValue:
        models.get(name, version)  # NotFound (404) when it is not served
        return jsonify(name=name, ready=True)

    @app.post("/v2/models/<name>/infer")
    @app.post("/v2/models/<name>/versions/<version>/infer")
    def oip_infer(name: str, version: str = "") -> ResponseReturnValue:
        with _server_span():
            body, header_length = oip_json.infer(
                models.get(name, version),
                request.get_data(),
                request.headers.get(oip_json.HEADER_LENGTH),
            )
        if header_length is None:
            return Response(body, mimetype="application/json")
        reply = Response(body, mimetype="application/octet-stream")
        reply.headers[oip_json.HEADER_LENGTH] = header_length
        return reply

    @app.errorhandler(errors.ServiceError)
    def service_error(error: errors.ServiceError) -> ResponseReturnValue:
        code = errors.code_name(error)
        status = HTTP_STATUS.get(code, 500)
        if request.path.startswith("/v2/"):
            return jsonify(error=str(error)), status  # the protocol's error shape
        return jsonify(error={"code": code, "message": str(error)}), status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> ResponseReturnValue:
        message = (
            f"the image is over the limit of {MAX_IMAGE_BYTES} bytes"
            if error.code == 413
            else error.description
        )
        status = error.code or 500
        code = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT"}
        return jsonify(error={"code": code.get(status, "INTERNAL"), "message": message}), status

    return app


def _server_span() -> AbstractContextManager[trace.Span]:
    """The request's SERVER span, continuing the caller's trace (`traceparent`)."""
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    return tracer.start_as_current_span(
        f"{request.method} {rule}",
        context=propagate.extract(request.headers),
        kind=trace.SpanKind.SERVER,
    )


def _ceiling(args: Mapping[str, str]) -> BatchCeiling | None:
    """The batching ceilings a caller (the adapter, from the placer's policy) sends."""
    size, delay_ms = args.get("max_batch_size"), args.get("max_queue_delay_ms")
    if size is None and delay_ms is None:
        return None
    try:
        return BatchCeiling(int(size or 0), float(delay_ms) / 1e3 if delay_ms is not None else None)
    except ValueError:
        raise errors.InvalidArgument(
            "max_batch_size must be an integer and max_queue_delay_ms a number"
        ) from None


def _top_k(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise errors.InvalidArgument(f"top_k must be an integer, not {text!r}") from None

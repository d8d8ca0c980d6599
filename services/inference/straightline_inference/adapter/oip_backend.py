"""An Open Inference Protocol endpoint the user already runs (a Triton, KServe, MLServer or
StraightLine model server elsewhere) as a platform: requests go to its REST API (KServe v2,
`/v2/models/<name>[/versions/<v>]/infer`) with the binary tensor data extension, the image as
a BYTES input (JPEG, PNG) or its pixels as UINT8 / FP32, and the answer's top k classes asked
for with the `classification` parameter (Triton's classification extension; the endpoint must
support it). Its capacity is this adapter's setting: `concurrency` requests at once, a queue of
`queue_limit` behind them. Health: `/v2/health/ready`, at start and while idle."""

import json
import time
from typing import Any

from straightline.v1 import types_pb2
from straightline_common import oip_tensors, tensors
from straightline_common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from straightline_inference.adapter.backend import Answer, Capacity, PredictCall
from straightline_inference.adapter.gate import SlotGate
from straightline_inference.adapter.modelserver_client import HttpEndpoint

HEADER_LENGTH = oip_tensors.HEADER_LENGTH
_ERRORS = {400: InvalidArgument, 404: NotFound, 409: FailedPrecondition, 429: ResourceExhausted}
_PIXELS = {"uint8": "UINT8", "float32": "FP32"}
_START_TIMEOUT_S = 60.0


class OipBackend:
    kind = types_pb2.PLATFORM_OIP

    def __init__(
        self, *, url: str, models: list[tuple[str, str]], concurrency: int, queue_limit: int = 0
    ) -> None:
        self._endpoint = HttpEndpoint(url, connections=concurrency)
        self._models = models
        self._gate = SlotGate(concurrency, queue_limit, name=f"the OIP endpoint {url}")
        self._ready = False

    def start(self) -> None:
        """Waits until the endpoint says it is ready and serves every configured model."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                self._get("/v2/health/ready", 5.0)
                for name, version in self._models:
                    self._get(_model_path(name, version) + "/ready", 5.0)
                self._ready = True
                return
            except (Unavailable, DeadlineExceeded, NotFound):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self._endpoint.close()

    def capacity(self) -> Capacity:
        return self._gate.capacity_report(warm=self._ready)

    def models(self) -> list[tuple[str, str]]:
        return list(self._models)

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        """What the endpoint says of the model: its name and version, and an image input's
        size when its shape names one ([-1, H, W, 3]); class names are not in the protocol."""
        body = json.loads(self._get(_model_path(name, version), 5.0))
        shape: list[int] = next((i.get("shape", []) for i in body.get("inputs", [])), [])
        height, width = (shape[1], shape[2]) if len(shape) == 4 else (0, 0)
        return {
            "name": body.get("name", name),
            "version": (body.get("versions") or [version or ""])[0],
            "class_names": [],
            "input_size": [height, width],
            "format": f"oip ({body.get('platform', 'unknown platform')})",
        }

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        with self._gate.slot(timeout) as queued:
            started = time.perf_counter()
            header, data = _infer_body(call)
            response = self._endpoint.send(
                "POST",
                _model_path(call.model_name, call.model_version) + "/infer",
                timeout,
                body=header + data,
                headers={
                    "Content-Type": "application/octet-stream",
                    HEADER_LENGTH: str(len(header)),
                },
            )
            answer = _answer(response, call)
            executed = time.perf_counter() - started
        return Answer(
            {"name": answer["model_name"], "version": answer.get("model_version", "")},
            answer["classes"],
            queue_seconds=queued,
            execution_seconds=executed,
        )

    def _get(self, path: str, timeout: float) -> bytes:
        response = self._endpoint.send("GET", path, timeout)
        if response.status >= 400:
            raise _error(response)
        return bytes(response.data)


def _model_path(name: str, version: str) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def _infer_body(call: PredictCall) -> tuple[bytes, bytes]:
    """The JSON header and the binary data of an infer request for one image."""
    media_type = call.content_type.split(";")[0].strip().lower()
    if media_type == tensors.MEDIA_TYPE:
        dtype, shape = tensors.parse_content_type(call.content_type)
        tensor = {"datatype": _PIXELS[dtype], "shape": [1, *shape]}
        data = call.payload
    else:
        tensor = {"datatype": "BYTES", "shape": [1]}
        data = oip_tensors.with_length(call.payload)
    header = {
        "id": call.request_id,
        "inputs": [{"name": "image", **tensor, "parameters": {"binary_data_size": len(data)}}],
        "outputs": [
            {"name": "scores", "parameters": {"classification": max(1, call.top_k)}},
        ],
    }
    return json.dumps(header).encode(), data


def _answer(response: Any, call: PredictCall) -> dict[str, Any]:
    """The endpoint's answer as the model's classes, best first."""
    if response.status >= 400:
        raise _error(response)
    length = response.headers.get(HEADER_LENGTH)
    try:
        body = json.loads(response.data[: int(length)] if length else response.data)
        (output,) = body["outputs"]
        entries = output.get("data") or oip_tensors.values_of(
            "BYTES", response.data[int(length or 0) :]
        )
        classes = []
        for entry in entries[: max(1, call.top_k)]:
            score, index, label = str(entry).split(":", 2)
            classes.append({"label": label, "index": int(index), "score": float(score)})
    except (ValueError, KeyError, TypeError, InvalidArgument) as error:
        raise Unavailable(
            f"the OIP endpoint answered without classification results ({error}); it must "
            "support the classification parameter"
        ) from None
    return {"model_name": body.get("model_name", call.model_name), **body, "classes": classes}


def _error(response: Any) -> Exception:
    try:
        message = json.loads(response.data).get("error", "")
    except (ValueError, AttributeError):
        message = ""
    error_class = _ERRORS.get(response.status, Unavailable)
    return error_class(f"the OIP endpoint answered {response.status}: {message}")

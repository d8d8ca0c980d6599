"""An Open Inference Protocol endpoint the user already runs (a Triton, KServe, MLServer or
StraightLine model server elsewhere) as a platform: requests go to its REST API (KServe v2,
`/v2/models/<name>[/versions/<v>]/infer`), the image as a BYTES input (JPEG, PNG) or its
pixels as UINT8 / FP32, and the answer's top k classes asked for with the `classification`
parameter (Triton's classification extension; the endpoint, or its model, must answer it).
With the binary tensor data extension when the endpoint lists it in its server metadata
(`GET /v2`); otherwise in plain JSON, the image base64 in the BYTES input's data (parameter
`content_type: base64`, MLServer's convention). Its capacity is this adapter's setting:
`concurrency` requests at once, a queue of `queue_limit` behind them. Health:
`/v2/health/ready`, at start and while idle."""

import base64
import json
import time
from typing import Any

import numpy as np

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
_BINARY_EXTENSION = "binary_tensor_data"
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
        self._binary = False  # whether the endpoint takes the binary tensor data extension

    def start(self) -> None:
        """Waits until the endpoint says it is ready and serves every configured model."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                self._get("/v2/health/ready", 5.0)
                for name, version in self._models:
                    self._get(_model_path(name, version) + "/ready", 5.0)
                self._binary = _BINARY_EXTENSION in self._extensions()
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
            body, headers = _binary_body(call) if self._binary else _json_body(call)
            response = self._endpoint.send(
                "POST",
                _model_path(call.model_name, call.model_version) + "/infer",
                timeout,
                body=body,
                headers=headers,
            )
            answer = _answer(response, call)
            executed = time.perf_counter() - started
        return Answer(
            {"name": answer["model_name"], "version": answer.get("model_version", "")},
            answer["classes"],
            queue_seconds=queued,
            execution_seconds=executed,
        )

    def _extensions(self) -> list[str]:
        """The protocol extensions the endpoint lists (none when it says nothing)."""
        try:
            extensions = json.loads(self._get("/v2", 5.0)).get("extensions")
        except (NotFound, ValueError, AttributeError):
            return []
        return [str(e) for e in extensions] if isinstance(extensions, list) else []

    def _get(self, path: str, timeout: float) -> bytes:
        response = self._endpoint.send("GET", path, timeout)
        if response.status >= 400:
            raise _error(response)
        return bytes(response.data)


def _model_path(name: str, version: str) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def _binary_body(call: PredictCall) -> tuple[bytes, dict[str, str]]:
    """An infer request for one image: the JSON header, then the tensor's bytes."""
    if _is_pixels(call):
        dtype, shape = tensors.parse_content_type(call.content_type)
        tensor: dict[str, Any] = {"datatype": _PIXELS[dtype], "shape": [1, *shape]}
        data = call.payload
    else:
        tensor, data = {"datatype": "BYTES", "shape": [1]}, oip_tensors.with_length(call.payload)
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = _request(call, tensor)
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + data, headers


def _json_body(call: PredictCall) -> tuple[bytes, dict[str, str]]:
    """An infer request for one image in plain JSON (endpoints without the extension)."""
    if _is_pixels(call):
        dtype, shape = tensors.parse_content_type(call.content_type)
        pixels = np.frombuffer(call.payload, dtype=np.dtype(dtype).newbyteorder("<"))
        tensor = {"datatype": _PIXELS[dtype], "shape": [1, *shape], "data": pixels.tolist()}
    else:
        tensor = {
            "datatype": "BYTES",
            "shape": [1],
            "data": [base64.b64encode(call.payload).decode()],
            "parameters": {"content_type": "base64"},
        }
    return _request(call, tensor), {"Content-Type": "application/json"}


def _is_pixels(call: PredictCall) -> bool:
    return call.content_type.split(";")[0].strip().lower() == tensors.MEDIA_TYPE


def _request(call: PredictCall, tensor: dict[str, Any]) -> bytes:
    """The JSON of an infer request with one input, asking for the top k classes."""
    request = {
        "id": call.request_id,
        "inputs": [{"name": "image", **tensor}],
        "outputs": [{"name": "scores", "parameters": {"classification": max(1, call.top_k)}}],
    }
    return json.dumps(request).encode()


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

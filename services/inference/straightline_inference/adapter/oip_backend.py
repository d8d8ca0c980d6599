"""An Open Inference Protocol endpoint the user already runs (a Triton, KServe, MLServer or
StraightLine model server elsewhere) as a platform, over REST (`http://`, `https://`: KServe
v2, `/v2/models/<name>[/versions/<v>]/infer`) or gRPC (`grpc://`, `grpcs://`:
`inference.GRPCInferenceService`). The image goes as a BYTES input (JPEG, PNG) or its pixels as
UINT8 / FP32, and the answer's top k classes are asked for with the `classification` parameter
(Triton's classification extension; the endpoint, or its model, must answer it). Over REST
with the binary tensor data extension when the endpoint lists it in its server metadata
(`GET /v2`), otherwise in plain JSON, the image base64 in the BYTES input's data (parameter
`content_type: base64`, MLServer's convention); over gRPC in `raw_input_contents`. Its
capacity is this adapter's setting: `concurrency` requests at once, a queue of `queue_limit`
behind them. Health: the endpoint's readiness and each model's, at start and while idle."""

import base64
import json
import time
from collections.abc import Sequence
from typing import Any, Protocol

import grpc
import numpy as np
from google.protobuf import json_format

from inference import open_inference_grpc_pb2 as oip
from inference import open_inference_grpc_pb2_grpc as oip_grpc
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
from straightline_inference.adapter.queue_bound import QueueBound

HEADER_LENGTH = oip_tensors.HEADER_LENGTH
_ERRORS = {400: InvalidArgument, 404: NotFound, 409: FailedPrecondition, 429: ResourceExhausted}
_GRPC_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}
# An answer is k short strings per image; a megabyte is far more than any classification.
MAX_ANSWER_BYTES = 1024 * 1024
_PIXELS = {"uint8": "UINT8", "float32": "FP32"}
_BINARY_EXTENSION = "binary_tensor_data"
_START_TIMEOUT_S = 60.0


class OipBackend:
    kind = types_pb2.PLATFORM_OIP

    def __init__(
        self,
        *,
        url: str,
        models: list[tuple[str, str]],
        concurrency: int,
        queue_limit: int | QueueBound = 0,
    ) -> None:
        self._transport = transport_for(url, concurrency)
        self._models = models
        self._gate = SlotGate(concurrency, queue_limit, name=f"the OIP endpoint {url}")
        self._ready = False

    def start(self) -> None:
        """Waits until the endpoint says it is ready and serves every configured model."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                self._transport.wait_ready(self._models, 5.0)
                self._ready = True
                return
            except (Unavailable, DeadlineExceeded, NotFound):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self._transport.close()

    def capacity(self) -> Capacity:
        return self._gate.capacity_report(warm=self._ready)

    def models(self) -> list[tuple[str, str]]:
        return list(self._models)

    def metadata(self, name: str, version: str) -> dict[str, Any]:
        """What the endpoint says of the model: its name and version, and an image input's
        size when its shape names one ([-1, H, W, 3]); class names are not in the protocol."""
        body = self._transport.model_metadata(name, version, 5.0)
        shape = [int(n) for n in next((i.get("shape", []) for i in body.get("inputs", [])), [])]
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
            model, entries = self._transport.infer(call, timeout)
            classes = classes_of(entries, call.top_k)
            executed = time.perf_counter() - started
        return Answer(model, classes, queue_seconds=queued, execution_seconds=executed)


class Transport(Protocol):
    def wait_ready(self, models: list[tuple[str, str]], timeout: float) -> None:
        """Returns when the endpoint and every model are ready; raises Unavailable,
        DeadlineExceeded or NotFound when not."""

    def model_metadata(self, name: str, version: str, timeout: float) -> dict[str, Any]:
        """The protocol's model metadata, as its REST JSON has it."""

    def infer(self, call: PredictCall, timeout: float) -> tuple[dict[str, str], list[str]]:
        """The model that answered ({"name", "version"}) and its "score:index:label" entries,
        best first."""

    def close(self) -> None: ...


def transport_for(url: str, connections: int) -> Transport:
    scheme = url.partition("://")[0].lower()
    if scheme in ("grpc", "grpcs"):
        return GrpcTransport(url, secure=scheme == "grpcs")
    return RestTransport(url, connections)


class RestTransport:
    def __init__(self, url: str, connections: int) -> None:
        self._endpoint = HttpEndpoint(url, connections=connections)
        self._binary = False  # whether the endpoint takes the binary tensor data extension

    def wait_ready(self, models: list[tuple[str, str]], timeout: float) -> None:
        self._get("/v2/health/ready", timeout)
        for name, version in models:
            self._get(_model_path(name, version) + "/ready", timeout)
        self._binary = _BINARY_EXTENSION in self._extensions(timeout)

    def model_metadata(self, name: str, version: str, timeout: float) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self._get(_model_path(name, version), timeout))
        return body

    def infer(self, call: PredictCall, timeout: float) -> tuple[dict[str, str], list[str]]:
        if self._binary:
            model, (entries,) = infer_together(self._endpoint, [call], timeout)
            return model, entries
        body, headers = _json_body(call)
        return _rest_answer(_post_infer(self._endpoint, call, body, headers, timeout), call)

    def close(self) -> None:
        self._endpoint.close()

    def _extensions(self, timeout: float) -> list[str]:
        """The protocol extensions the endpoint lists (none when it says nothing)."""
        try:
            extensions = json.loads(self._get("/v2", timeout)).get("extensions")
        except (NotFound, ValueError, AttributeError):
            return []
        return [str(e) for e in extensions] if isinstance(extensions, list) else []

    def _get(self, path: str, timeout: float) -> bytes:
        response = self._endpoint.send("GET", path, timeout)
        if response.status >= 400:
            raise _error(response)
        return bytes(response.data)


class GrpcTransport:
    """`inference.GRPCInferenceService` at host:port, in plain text on a network the operator
    trusts (`grpc://`) or over TLS checked against the system's roots (`grpcs://`)."""

    def __init__(self, url: str, *, secure: bool) -> None:
        self._target = url.partition("://")[2].rstrip("/")
        options = [("grpc.max_receive_message_length", MAX_ANSWER_BYTES)]
        self._channel = (
            grpc.secure_channel(self._target, grpc.ssl_channel_credentials(), options)
            if secure
            else grpc.insecure_channel(self._target, options)
        )
        self._stub = oip_grpc.GRPCInferenceServiceStub(self._channel)

    def wait_ready(self, models: list[tuple[str, str]], timeout: float) -> None:
        if not self._call(self._stub.ServerReady, oip.ServerReadyRequest(), timeout).ready:
            raise Unavailable(f"the OIP endpoint {self._target} is not ready")
        for name, version in models:
            ready = oip.ModelReadyRequest(name=name, version=version)
            if not self._call(self._stub.ModelReady, ready, timeout).ready:
                raise Unavailable(f"model {name!r} is not ready on the OIP endpoint")

    def model_metadata(self, name: str, version: str, timeout: float) -> dict[str, Any]:
        request = oip.ModelMetadataRequest(name=name, version=version)
        answer = self._call(self._stub.ModelMetadata, request, timeout)
        return json_format.MessageToDict(answer, preserving_proto_field_name=True)

    def infer(self, call: PredictCall, timeout: float) -> tuple[dict[str, str], list[str]]:
        answer = self._call(self._stub.ModelInfer, _grpc_request(call), timeout)
        try:
            (output,) = answer.outputs
            entries = [e.decode() for e in output.contents.bytes_contents] or [
                str(e) for e in oip_tensors.values_of("BYTES", answer.raw_output_contents[0])
            ]
        except (ValueError, IndexError, UnicodeDecodeError, InvalidArgument) as error:
            raise _without_classification(error) from None
        return {"name": answer.model_name, "version": answer.model_version}, entries

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float) -> Any:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise _grpc_error(error) from None


def _model_path(name: str, version: str) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def infer_together(
    endpoint: HttpEndpoint, calls: Sequence[PredictCall], timeout: float
) -> tuple[dict[str, str], list[list[str]]]:
    """One REST infer request, with the binary tensor data extension, for the calls' images
    (one call, or several encoded images for the same model): the model that answered and each
    image's "score:index:label" entries, best first."""
    body, headers = _binary_body(calls)
    response = _post_infer(endpoint, calls[0], body, headers, timeout)
    model, entries = _rest_answer(response, calls[0])
    width, rest = divmod(len(entries), len(calls))
    if rest or not width:
        raise _without_classification(ValueError(f"{len(entries)} entries for {len(calls)} images"))
    return model, [entries[i * width : (i + 1) * width] for i in range(len(calls))]


def _post_infer(
    endpoint: HttpEndpoint, call: PredictCall, body: bytes, headers: dict[str, str], timeout: float
) -> Any:
    path = _model_path(call.model_name, call.model_version) + "/infer"
    return endpoint.send("POST", path, timeout, body=body, headers=headers)


def _binary_body(calls: Sequence[PredictCall]) -> tuple[bytes, dict[str, str]]:
    """An infer request for one image, or several encoded ones: the JSON header, then the
    tensor's bytes; the top k asked for is the largest any call asks for."""
    first = calls[0]
    if is_pixels(first):
        assert len(calls) == 1, "pixels go one image per request"
        dtype, shape = tensors.parse_content_type(first.content_type)
        tensor: dict[str, Any] = {"datatype": _PIXELS[dtype], "shape": [1, *shape]}
        data = first.payload
    else:
        tensor = {"datatype": "BYTES", "shape": [len(calls)]}
        data = b"".join(oip_tensors.with_length(call.payload) for call in calls)
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = _request(first, tensor, max(call.top_k for call in calls))
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return header + data, headers


def _json_body(call: PredictCall) -> tuple[bytes, dict[str, str]]:
    """An infer request for one image in plain JSON (endpoints without the extension)."""
    if is_pixels(call):
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
    return _request(call, tensor, call.top_k), {"Content-Type": "application/json"}


def is_pixels(call: PredictCall) -> bool:
    return call.content_type.split(";")[0].strip().lower() == tensors.MEDIA_TYPE


def _request(call: PredictCall, tensor: dict[str, Any], top_k: int) -> bytes:
    """The JSON of an infer request with one input, asking for the top k classes."""
    request = {
        "id": call.request_id,
        "inputs": [{"name": "image", **tensor}],
        "outputs": [{"name": "scores", "parameters": {"classification": max(1, top_k)}}],
    }
    return json.dumps(request).encode()


def _rest_answer(response: Any, call: PredictCall) -> tuple[dict[str, str], list[str]]:
    if response.status >= 400:
        raise _error(response)
    length = response.headers.get(HEADER_LENGTH)
    try:
        body = json.loads(response.data[: int(length)] if length else response.data)
        (output,) = body["outputs"]
        entries = output.get("data") or oip_tensors.values_of(
            "BYTES", response.data[int(length or 0) :]
        )
        model = {"name": body.get("model_name", call.model_name)}
    except (ValueError, KeyError, TypeError, InvalidArgument) as error:
        raise _without_classification(error) from None
    return {**model, "version": body.get("model_version", "")}, [str(e) for e in entries]


def _grpc_request(call: PredictCall) -> oip.ModelInferRequest:
    """An infer request for one image, its tensor in raw_input_contents."""
    if is_pixels(call):
        dtype, shape = tensors.parse_content_type(call.content_type)
        tensor = oip.ModelInferRequest.InferInputTensor(
            name="image", datatype=_PIXELS[dtype], shape=[1, *shape]
        )
        data = call.payload
    else:
        tensor = oip.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])
        data = oip_tensors.with_length(call.payload)
    wanted = oip.ModelInferRequest.InferRequestedOutputTensor(name="scores")
    wanted.parameters["classification"].int64_param = max(1, call.top_k)
    return oip.ModelInferRequest(
        model_name=call.model_name,
        model_version=call.model_version,
        id=call.request_id,
        inputs=[tensor],
        outputs=[wanted],
        raw_input_contents=[data],
    )


def classes_of(entries: list[str], top_k: int) -> list[dict[str, Any]]:
    """The endpoint's "score:index:label" entries as the model's classes, best first."""
    classes = []
    try:
        for entry in entries[: max(1, top_k)]:
            score, index, label = entry.split(":", 2)
            classes.append({"label": label, "index": int(index), "score": float(score)})
    except ValueError as error:
        raise _without_classification(error) from None
    return classes


def _without_classification(error: Exception) -> Unavailable:
    return Unavailable(
        f"the OIP endpoint answered without classification results ({error}); it must "
        "support the classification parameter"
    )


def _grpc_error(error: grpc.RpcError) -> Exception:
    code, details = error.code(), error.details()
    error_class = _GRPC_ERRORS.get(code, Unavailable)
    return error_class(f"the OIP endpoint answered {code.name}: {details}")


def _error(response: Any) -> Exception:
    try:
        message = json.loads(response.data).get("error", "")
    except (ValueError, AttributeError):
        message = ""
    error_class = _ERRORS.get(response.status, Unavailable)
    return error_class(f"the OIP endpoint answered {response.status}: {message}")

"""The Open Inference Protocol's JSON (KServe v2 REST) infer request and response, with the
binary tensor data extension, and the one decode-and-predict path behind the model server's
`/v2/.../infer` and the Lambda handler's OIP event.

A request is JSON (`inputs`, `outputs`, `id`), or, with the binary data extension, JSON of
`Inference-Header-Content-Length` bytes followed by each input's bytes (its
`binary_data_size` parameter). It is read into the gRPC message, so that its tensors are
checked and turned into images by the placer's own code (`straightline_common/oip_tensors.py`):
the images as BYTES (JPEG, PNG; in JSON, each element base64), or UINT8 / FP32 pixels
[N, H, W, 3]; the `scores` output, or top-k labels with the `classification` parameter. An
output asked for with `binary_data: true` comes back binary the same way.
"""

import base64
import json
from typing import Any

from inference import open_inference_grpc_pb2 as oip
from straightline_common import errors, limits, oip_tensors
from straightline_common.telemetry import straightline_version
from straightline_inference.model import LoadedModel, Prediction, run_together

HEADER_LENGTH = oip_tensors.HEADER_LENGTH
_JSON_DATATYPES = {"UINT8", "FP32", "BYTES"}


def infer(model: LoadedModel, body: bytes, header_length: str | None) -> tuple[bytes, str | None]:
    """Runs an infer request on the model: the response body, and its header length when it
    carries binary outputs (None: plain JSON)."""
    message, binary_outputs = _infer_request(body, header_length)
    return _infer_response(infer_message(model, message), binary_outputs)


def infer_message(model: LoadedModel, message: oip.ModelInferRequest) -> oip.ModelInferResponse:
    """Runs an infer request, as the protocol's message, on the model: REST's, the Lambda
    handler's and gRPC's one path. A request's images run at once (`run_together`)."""
    answers = run_together(
        lambda image: _scored(
            model.predict(image.payload, image.content_type, oip_tensors.ALL_CLASSES)
        ),
        oip_tensors.images_of(message),
    )
    response = oip.ModelInferResponse(
        model_name=model.version.name, model_version=model.version.version, id=message.id
    )
    oip_tensors.fill_outputs(response, oip_tensors.requested_outputs(message), answers)
    return response


def server_metadata() -> dict[str, Any]:
    """`GET /v2`: what the model server is and which protocol extensions it takes."""
    return {
        "name": "straightline-modelserver",
        "version": straightline_version(),
        "extensions": ["binary_tensor_data", "classification"],
    }


def metadata(model: LoadedModel) -> dict[str, Any]:
    return {
        "name": model.version.name,
        "versions": [model.version.version],
        "platform": "straightline",
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": oip_tensors.SCORES, "datatype": "FP32", "shape": [-1, len(model.class_names)]}
        ],
    }


def _scored(prediction: Prediction) -> oip_tensors.Scored:
    return oip_tensors.Scored([(c.label, c.index, c.score) for c in prediction.classes])


def _infer_request(body: bytes, length: str | None) -> tuple[oip.ModelInferRequest, set[str]]:
    """The request as the gRPC message (binary inputs as raw contents), and the outputs asked
    for as binary."""
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            raise errors.InvalidArgument(
                f"{HEADER_LENGTH} must be the JSON header's length in bytes, at most the body's"
            )
        header, binary = body[: int(length)], body[int(length) :]
    else:
        header, binary = body, b""
    try:
        document = json.loads(header)
    except (ValueError, RecursionError):
        raise errors.InvalidArgument("the request is not JSON (nor JSON and binary data)") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise errors.InvalidArgument('the request must be a JSON object with an "inputs" list')
    message = oip.ModelInferRequest(id=str(document.get("id", "")))
    offset, raw = 0, []
    for tensor in document["inputs"]:
        entry = _tensor(tensor)
        size = _parameters(tensor).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise errors.InvalidArgument("an input's binary_data_size runs past the body")
            raw.append(binary[offset : offset + size])
            offset += size
        else:
            _fill_contents(entry, tensor.get("data"))
        message.inputs.append(entry)
    if raw and len(raw) != len(message.inputs):
        raise errors.InvalidArgument("either every input is binary or none is")
    message.raw_input_contents.extend(raw)
    binary_outputs = set()
    for output in document.get("outputs") or []:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise errors.InvalidArgument('each output must be an object with a "name"')
        requested = message.outputs.add(name=output["name"])
        parameters = _parameters(output)
        if "classification" in parameters:
            requested.parameters["classification"].int64_param = _integer(
                parameters["classification"], "classification"
            )
        if parameters.get("binary_data"):
            binary_outputs.add(output["name"])
    limits.check_message(message)  # the limits every gRPC request keeps
    return message, binary_outputs


def _parameters(entry: dict[str, Any]) -> dict[str, Any]:
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise errors.InvalidArgument('"parameters" must be a JSON object')
    return parameters


def _tensor(tensor: Any) -> oip.ModelInferRequest.InferInputTensor:
    if not isinstance(tensor, dict):
        raise errors.InvalidArgument("each input must be a JSON object")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) for d in shape):
        raise errors.InvalidArgument("each input needs a shape: a list of integers")
    datatype = tensor.get("datatype")
    if datatype not in _JSON_DATATYPES:
        raise errors.InvalidArgument(
            f"input datatype {datatype!r}: send BYTES (encoded images), UINT8 or FP32 (pixels)"
        )
    return oip.ModelInferRequest.InferInputTensor(
        name=str(tensor.get("name", "")), datatype=datatype, shape=shape
    )


def _fill_contents(entry: oip.ModelInferRequest.InferInputTensor, data: Any) -> None:
    """JSON data, flattened: base64 strings for BYTES, numbers for pixels."""
    if not isinstance(data, list):
        raise errors.InvalidArgument('each input needs "data" (or binary_data_size)')
    flat = _flatten(data)
    if entry.datatype == "BYTES":
        try:
            entry.contents.bytes_contents.extend(base64.b64decode(e, validate=True) for e in flat)
        except (TypeError, ValueError):
            raise errors.InvalidArgument("BYTES data in JSON must be base64 strings") from None
    elif entry.datatype == "UINT8":
        entry.contents.uint_contents.extend(_integer(v, "UINT8 data") for v in flat)
    else:
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
            raise errors.InvalidArgument("FP32 data must be numbers")
        entry.contents.fp32_contents.extend(flat)


def _flatten(data: list[Any]) -> list[Any]:
    """Nested lists in row-major order (the body's size limit bounds them)."""
    flat: list[Any] = []
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _integer(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise errors.InvalidArgument(f"{what} must be non-negative integers")
    return value


def _infer_response(
    response: oip.ModelInferResponse, binary_outputs: set[str]
) -> tuple[bytes, str | None]:
    outputs, blobs = [], []
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        entry: dict[str, object] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if output.name in binary_outputs:
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = oip_tensors.values_of(output.datatype, raw)
        outputs.append(entry)
    header = json.dumps(
        {
            "model_name": response.model_name,
            "model_version": response.model_version,
            "id": response.id,
            "outputs": outputs,
        }
    ).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), str(len(header))

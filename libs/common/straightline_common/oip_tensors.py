"""The Open Inference Protocol's tensors, for image classifiers: the images a ModelInfer
request carries, and the class scores its response returns: the placer's front door and the
model servers' read and write them alike. Pure: no gRPC, no placement, no model.

Inputs (one tensor): a BYTES tensor of encoded images (JPEG or PNG), shape [N] or [N, 1]; or
a UINT8 or FP32 tensor of RGB pixels in [0, 255], shape [N, H, W, 3] or [H, W, 3]; each in
the typed `contents` or in `raw_input_contents` (little-endian; BYTES elements each after a
4-byte little-endian length, as the protocol's binary form has them).

Outputs: `scores`, FP32 [N, classes], in class-index order; a requested output with the
`classification` parameter (k) is instead BYTES [N, k] of "score:index:label", best first
(Triton's classification extension). Outputs travel in `raw_output_contents`, as Triton
sends them.
"""

import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from inference import open_inference_grpc_pb2 as oip
from straightline_common import tensors
from straightline_common.errors import InvalidArgument
from straightline_common.names import shown

Tensor = oip.ModelInferRequest.InferInputTensor

MAX_IMAGES = 64  # per request: each is placed on its own
ALL_CLASSES = 100_000  # a top k that asks a model for every class's score
# The binary tensor data extension: the JSON header's length, before the binary data.
HEADER_LENGTH = "Inference-Header-Content-Length"
SCORES = "scores"
_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
# OIP datatype -> (raw tensor dtype, typed contents field, array typecode)
_PIXEL_TYPES = {
    "UINT8": ("uint8", "uint_contents", "B"),
    "FP32": ("float32", "fp32_contents", "f"),
}


@dataclass(frozen=True)
class Image:
    payload: bytes
    content_type: str


@dataclass(frozen=True)
class Scored:
    """One image's answer: (label, index, score) for every class."""

    classes: Sequence[tuple[str, int, float]]


def images_of(request: oip.ModelInferRequest) -> list[Image]:
    """The request's images, each checked; InvalidArgument with a sentence otherwise."""
    if len(request.inputs) != 1:
        raise InvalidArgument(
            f"the model takes one input tensor, the images, not {len(request.inputs)}: a BYTES "
            "tensor of JPEG or PNG images, or a UINT8 or FP32 tensor of pixels [N, H, W, 3]"
        )
    if request.raw_input_contents and len(request.raw_input_contents) != 1:
        raise InvalidArgument("raw_input_contents must hold one entry per input: one")
    tensor = request.inputs[0]
    raw = request.raw_input_contents[0] if request.raw_input_contents else None
    if tensor.datatype == "BYTES":
        return _encoded_images(tensor, raw)
    if tensor.datatype in _PIXEL_TYPES:
        return _pixel_images(tensor, raw)
    raise InvalidArgument(
        f"input {shown(tensor.name)} has datatype {shown(tensor.datatype)}; send BYTES "
        "(encoded images), UINT8 or FP32 (pixels)"
    )


def _encoded_images(tensor: Tensor, raw: bytes | None) -> list[Image]:
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidArgument(f"a BYTES input's shape must be [N] or [N, 1], not {shape}")
    count = _image_count(shape[0])
    elements = _bytes_elements(raw) if raw is not None else list(tensor.contents.bytes_contents)
    if len(elements) != count:
        raise InvalidArgument(
            f"the BYTES input's shape says {count} images; it holds {len(elements)}"
        )
    return [Image(element, _image_type(element, i)) for i, element in enumerate(elements)]


def _bytes_elements(raw: bytes, limit: int | None = MAX_IMAGES) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidArgument("raw BYTES input ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidArgument("raw BYTES input ends inside an element (its length says more)")
        elements.append(raw[offset : offset + length])
        offset += length
        if limit is not None and len(elements) > limit:
            raise InvalidArgument(f"a request holds at most {limit} images; split it")
    return elements


def _image_type(element: bytes, index: int) -> str:
    if element.startswith(_JPEG):
        return "image/jpeg"
    if element.startswith(_PNG):
        return "image/png"
    raise InvalidArgument(f"image {index} of the BYTES input is neither a JPEG nor a PNG")


def _pixel_images(tensor: Tensor, raw: bytes | None) -> list[Image]:
    dtype, field, typecode = _PIXEL_TYPES[tensor.datatype]
    shape = list(tensor.shape)
    if len(shape) == 3:
        shape = [1, *shape]
    if len(shape) != 4 or shape[3] != 3 or min(shape) < 1:
        raise InvalidArgument(
            f"a {tensor.datatype} input's shape must be [N, H, W, 3] or [H, W, 3] (RGB), "
            f"not {list(tensor.shape)}"
        )
    count, height, width, _ = shape
    _image_count(count)
    if height * width > tensors.MAX_PIXELS:
        raise InvalidArgument(f"each image may have at most {tensors.MAX_PIXELS:,} pixels")
    per_image = height * width * 3
    data = raw if raw is not None else _typed_bytes(tensor.contents, field, typecode)
    itemsize = array(typecode).itemsize
    if len(data) != count * per_image * itemsize:
        raise InvalidArgument(
            f"the {tensor.datatype} input's shape {list(tensor.shape)} says {count * per_image} "
            "values; it holds another number"
        )
    content_type = tensors.content_type(dtype, (height, width, 3))
    size = per_image * itemsize
    return [Image(data[i * size : (i + 1) * size], content_type) for i in range(count)]


def _typed_bytes(contents: oip.InferTensorContents, field: str, typecode: str) -> bytes:
    """Typed contents as the little-endian bytes raw contents would hold."""
    try:
        values = array(typecode, getattr(contents, field))
    except OverflowError:
        raise InvalidArgument("a UINT8 input holds a value outside 0-255") from None
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def _image_count(count: int) -> int:
    if not 1 <= count <= MAX_IMAGES:
        raise InvalidArgument(f"a request holds 1 to {MAX_IMAGES} images, not {count}")
    return count


def requested_outputs(request: oip.ModelInferRequest) -> list[tuple[str, int]]:
    """(name, k) of each output to return: k > 0 for top-k labels, 0 for the scores."""
    if not request.outputs:
        return [(SCORES, 0)]
    outputs = []
    for output in request.outputs:
        if output.name != SCORES:
            raise InvalidArgument(f"the model has one output, {SCORES!r}, not {shown(output.name)}")
        parameter = output.parameters.get("classification")
        k = 0
        if parameter is not None:
            k = parameter.int64_param or parameter.uint64_param
            if not 1 <= k <= 1000:
                raise InvalidArgument(
                    "the classification parameter must be an int64 from 1 to 1000"
                )
        outputs.append((output.name, k))
    return outputs


def fill_outputs(
    response: oip.ModelInferResponse, wanted: list[tuple[str, int]], answers: list[Scored]
) -> None:
    """The outputs `wanted` for the images' answers, in `raw_output_contents`."""
    for name, k in wanted:
        if k:
            labels = [
                [f"{score:f}:{index}:{label}" for label, index, score in _best(answer, k)]
                for answer in answers
            ]
            width = len(labels[0]) if labels else 0
            response.outputs.add(name=name, datatype="BYTES", shape=[len(answers), width])
            response.raw_output_contents.append(
                b"".join(with_length(text.encode()) for row in labels for text in row)
            )
        else:
            classes = max(1 + index for answer in answers for _, index, _ in answer.classes)
            scores = array("f", [s for answer in answers for s in _scores(answer, classes)])
            if sys.byteorder != "little":
                scores.byteswap()
            response.outputs.add(name=name, datatype="FP32", shape=[len(answers), classes])
            response.raw_output_contents.append(scores.tobytes())


def values_of(datatype: str, raw: bytes) -> list[str] | list[float]:
    """An output's raw contents as the flat values a JSON body carries (BYTES as text)."""
    if datatype == "BYTES":
        return [element.decode() for element in _bytes_elements(raw, limit=None)]
    values = array("f", raw)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def _best(answer: Scored, k: int) -> list[tuple[str, int, float]]:
    return sorted(answer.classes, key=lambda c: (-c[2], c[1]))[:k]


def _scores(answer: Scored, classes: int) -> list[float]:
    scores = [0.0] * classes
    for _, index, score in answer.classes:
        scores[index] = score
    return scores


def with_length(element: bytes) -> bytes:
    """A BYTES element as the protocol's binary form has it: after its 4-byte length."""
    return struct.pack("<I", len(element)) + element

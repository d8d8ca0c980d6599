"""Decoded images as they travel beside encoded ones: raw pixels in row-major order, with
their data type and shape in the content type, so every platform's decode path (the model
server, the Lambda handler) reads them as it reads a JPEG's or a PNG's.

    application/x-straightline-tensor; dtype=uint8; shape=224,224,3

The Open Inference Protocol's UINT8 and FP32 image tensors become this on the placer."""

from straightline_common.errors import InvalidArgument
from straightline_common.names import shown

MEDIA_TYPE = "application/x-straightline-tensor"
DTYPES = {"uint8": 1, "float32": 4}  # name -> bytes per element
# The largest image any decode path takes, in pixels (a decompression-bomb guard too).
MAX_PIXELS = 4096 * 4096


def content_type(dtype: str, shape: tuple[int, ...]) -> str:
    return f"{MEDIA_TYPE}; dtype={dtype}; shape={','.join(map(str, shape))}"


def parse_content_type(text: str) -> tuple[str, tuple[int, ...]]:
    """(dtype, shape) of a raw tensor's content type; InvalidArgument when it is not one."""
    parameters = dict(
        part.strip().partition("=")[::2] for part in text.split(";")[1:] if "=" in part
    )
    dtype, shape_text = parameters.get("dtype", ""), parameters.get("shape", "")
    if dtype not in DTYPES:
        raise InvalidArgument(
            f"a raw tensor's dtype must be {' or '.join(DTYPES)}, not {shown(dtype)}"
        )
    try:
        shape = tuple(int(d) for d in shape_text.split(","))
    except ValueError:
        raise InvalidArgument(
            f"a raw tensor's shape must be comma-separated sizes, not {shown(shape_text)}"
        ) from None
    return dtype, shape

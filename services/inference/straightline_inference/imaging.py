"""Image bytes in, model input out: the one decode path of every platform.

Models take float32 RGB pixels in [0, 255] of their input size and rescale them themselves
(a Rescaling layer inside the model), so no preprocessing convention travels beside the model.
"""

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from straightline_common.errors import InvalidArgument

CONTENT_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
# The largest image accepted by any front door; the serverless one is smaller (Lambda's limit).
MAX_IMAGE_BYTES = 16 * 1024 * 1024
# Decompression-bomb guard: the largest decoded image, in pixels.
MAX_PIXELS = 50_000_000


def decode(data: bytes, content_type: str, size: tuple[int, int]) -> np.ndarray:
    """Decodes a JPEG or PNG and resizes it to `size` (height, width): a (h, w, 3) array."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise InvalidArgument(
            f"content type {content_type!r} is not supported; send image/jpeg or image/png"
        )
    if not data:
        raise InvalidArgument("the image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(
            f"the image is {len(data)} bytes, over the limit of {MAX_IMAGE_BYTES} bytes"
        )
    try:
        with Image.open(io.BytesIO(data), formats=[CONTENT_TYPES[media_type]]) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InvalidArgument(
                    f"the image is {image.width}x{image.height} pixels, over {MAX_PIXELS}"
                )
            image.load()
            height, width = size
            rgb = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    except UnidentifiedImageError:
        raise InvalidArgument(
            f"the payload is not a {CONTENT_TYPES[media_type]} image (declared {media_type})"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidArgument(
            f"the image could not be decoded (truncated or corrupt): {error}"
        ) from None
    return np.asarray(rgb, dtype=np.float32)

"""Image bytes in, model input out: the one decode path of every platform.

Models take float32 RGB pixels in [0, 255] of their input size and rescale them themselves
(a Rescaling layer inside the model), so no preprocessing convention travels beside the model.
Besides JPEG and PNG, an image may come decoded: raw RGB pixels, uint8 or float32 in
[0, 255], height x width x 3 (`straightline_common.tensors`), resized here like the others.
"""

import io
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from straightline_common import tensors
from straightline_common.errors import InvalidArgument
from straightline_common.names import shown

CONTENT_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
# The largest image accepted by any front door; the serverless one is smaller (Lambda's limit).
MAX_IMAGE_BYTES = 16 * 1024 * 1024
# Decompression-bomb guard: the largest image decoded, in pixels (4096 x 4096), checked from
# the header before any decoding. JPEGs are decoded at draft size (down to 1/8 of each side,
# no smaller than the model's input), so the limit applies to that size, and their header to
# MAX_JPEG_PIXELS, so that camera photographs pass (the data set holds 24-megapixel ones; a
# 45-megapixel full-frame camera's 8192 x 5464). Decoding and converting to RGB take at most
# 140 MiB per request in flight above the model's (measured: bench/image_memory.py; the
# worst case is a progressive JPEG at the limit, whose coefficients libjpeg keeps whole).
MAX_PIXELS = tensors.MAX_PIXELS
MAX_JPEG_PIXELS = 45_000_000


def decode(data: bytes, content_type: str, size: tuple[int, int]) -> np.ndarray:
    """Decodes a JPEG or PNG and resizes it to `size` (height, width): a (h, w, 3) array."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES and media_type != tensors.MEDIA_TYPE:
        raise InvalidArgument(
            f"content type {shown(content_type)} is not supported; send image/jpeg, image/png "
            f"or {tensors.MEDIA_TYPE}"
        )
    if not data:
        raise InvalidArgument("the image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(
            f"the image is {len(data)} bytes, over the limit of {MAX_IMAGE_BYTES} bytes"
        )
    if media_type == tensors.MEDIA_TYPE:
        return _decode_raw(data, *tensors.parse_content_type(content_type), size)
    try:
        with Image.open(io.BytesIO(data), formats=[CONTENT_TYPES[media_type]]) as image:
            limit = MAX_JPEG_PIXELS if image.format == "JPEG" else MAX_PIXELS
            if image.width * image.height > limit:
                raise _too_many_pixels(image, limit)
            height, width = size
            image.draft("RGB", (width, height))  # JPEG: decode at a fraction of the size
            if image.width * image.height > MAX_PIXELS:
                raise _too_many_pixels(image, MAX_PIXELS)
            image.load()
            rgb = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    except Image.DecompressionBombError:
        raise InvalidArgument(
            f"the image has more pixels than the limit of {MAX_PIXELS:,} (4096 x 4096)"
        ) from None
    except UnidentifiedImageError:
        raise InvalidArgument(
            f"the payload is not a {CONTENT_TYPES[media_type]} image (declared {media_type})"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidArgument(
            f"the image could not be decoded (truncated or corrupt): {error}"
        ) from None
    return np.asarray(rgb, dtype=np.float32)


def _decode_raw(
    data: bytes, dtype: str, shape: tuple[int, ...], size: tuple[int, int]
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Raw RGB pixels (height, width, 3), resized to `size` as a decoded JPEG is."""
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise InvalidArgument(
            f"a raw image's shape must be height,width,3 (RGB), not {','.join(map(str, shape))}"
        )
    height, width, _ = shape
    if height * width > MAX_PIXELS:
        raise InvalidArgument(
            f"the raw image is {width}x{height} pixels, over the limit of {MAX_PIXELS:,}"
        )
    expected = height * width * 3 * tensors.DTYPES[dtype]
    if len(data) != expected:
        raise InvalidArgument(
            f"a {dtype} image of shape {height},{width},3 is {expected} bytes, not {len(data)}"
        )
    pixels = np.frombuffer(data, dtype="<u1" if dtype == "uint8" else "<f4").reshape(shape)
    if dtype == "float32" and not np.isfinite(pixels).all():
        raise InvalidArgument("a float32 image holds NaN or infinite values; send 0-255")
    target_height, target_width = size
    if (height, width) == (target_height, target_width):
        return pixels.astype(np.float32)
    if dtype == "uint8":
        image = Image.fromarray(pixels, "RGB")
        resized = image.resize((target_width, target_height), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.float32)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[:, :, c]), "F").resize(
                (target_width, target_height), Image.Resampling.BILINEAR
            )
        )
        for c in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def _too_many_pixels(image: Image.Image, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"the {image.format} image is {image.width}x{image.height} pixels, over the limit of "
        f"{limit:,} pixels for {image.format} images; send it smaller"
    )

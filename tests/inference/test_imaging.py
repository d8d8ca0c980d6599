"""The decode path's pixel limits: camera photographs pass, bombs are refused from the header."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from straightline_common import tensors
from straightline_common.errors import InvalidArgument
from straightline_inference import imaging
from tests.support.models import png_header


def jpeg(width: int, height: int) -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (width, height), (120, 80, 40)).save(data, "JPEG", quality=50)
    return data.getvalue()


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header claiming another size (what a bomb's header does)."""
    frame = data.index(b"\xff\xc0") + 5  # SOF0: length (2), precision (1), then height, width
    return data[:frame] + struct.pack(">HH", height, width) + data[frame + 4 :]


def test_a_24_megapixel_camera_jpeg_is_decoded_at_draft_size():
    # The size of the largest photographs in animals4 (6016 x 4000), over 4096 x 4096.
    pixels = imaging.decode(jpeg(6016, 4000), "image/jpeg", (299, 299))
    assert pixels.shape == (299, 299, 3)
    assert pixels[150, 150].tolist() == pytest.approx([120, 80, 40], abs=6)  # JPEG at quality 50


def test_a_jpeg_header_over_the_jpeg_limit_is_refused_before_decoding():
    bomb = with_jpeg_size(jpeg(64, 64), 9_000, 9_000)
    with pytest.raises(InvalidArgument, match="9000x9000 pixels, over the limit of 45,000,000"):
        imaging.decode(bomb, "image/jpeg", (299, 299))


def test_a_png_over_4096_squared_is_refused_from_its_header():
    with pytest.raises(InvalidArgument, match="5000x4000 pixels, over the limit of 16,777,216"):
        imaging.decode(png_header(5000, 4000), "image/png", (299, 299))


# Raw pixels (the Open Inference Protocol's UINT8 and FP32 tensors) ---------------------------


def raw(pixels) -> tuple[bytes, str]:
    dtype = "uint8" if pixels.dtype == np.uint8 else "float32"
    return pixels.astype("<u1" if dtype == "uint8" else "<f4").tobytes(), tensors.content_type(
        dtype, pixels.shape
    )


def test_raw_pixels_of_the_input_size_arrive_unchanged():
    pixels = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    assert np.array_equal(imaging.decode(*raw(pixels), (32, 48)), pixels.astype(np.float32))
    floats = pixels.astype(np.float32) + 0.25
    assert np.array_equal(imaging.decode(*raw(floats), (32, 48)), floats)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_raw_pixels_are_resized_like_a_decoded_image(dtype):
    pixels = np.full((60, 80, 3), (200, 100, 50), dtype=dtype)
    resized = imaging.decode(*raw(pixels), (30, 40))
    assert resized.shape == (30, 40, 3) and resized.dtype == np.float32
    assert resized[15, 20].tolist() == pytest.approx([200, 100, 50], abs=0.5)


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (b"\0" * 12, tensors.content_type("uint8", (2, 2, 1)), "height,width,3"),
        (b"\0" * 11, tensors.content_type("uint8", (2, 2, 3)), "is 12 bytes, not 11"),
        (b"\0" * 12, tensors.content_type("int64", (2, 2, 3)), "uint8 or float32"),
        (b"\0" * 12, f"{tensors.MEDIA_TYPE}; dtype=uint8; shape=2,x,3", "comma-separated"),
        (b"\0" * 3, tensors.content_type("uint8", (5000, 5000, 3)), "over the limit"),
        (
            np.full((2, 2, 3), np.nan, "<f4").tobytes(),
            tensors.content_type("float32", (2, 2, 3)),
            "NaN or infinite",
        ),
    ],
)
def test_raw_pixels_that_do_not_add_up_are_refused(data, content_type, message):
    with pytest.raises(InvalidArgument, match=message):
        imaging.decode(data, content_type, (32, 32))

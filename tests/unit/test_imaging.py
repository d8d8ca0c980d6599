"""The decode path's pixel limits: camera photographs pass, bombs are refused from the header."""

import io
import struct

import pytest
from PIL import Image

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

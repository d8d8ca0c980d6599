"""Small Keras image classifiers and images made by the tests themselves (no download)."""

import io
import struct
import tempfile
import zlib
from pathlib import Path

from PIL import Image

from straightline_common.modelstore import ModelStore

CLASSES = ("cat", "chook", "dog", "horse")


def make_classifier(store: ModelStore, name: str = "tiny", input_size: int = 32, seed: int = 0):
    """Saves a small randomly initialised CNN (with its own 0-255 rescaling) to the store."""
    import tensorflow as tf

    # Seeded initialisers, not tf.keras.utils.set_random_seed: that seeds Python's `random`,
    # from which OpenTelemetry draws trace ids, and the test process's traces would repeat.
    initializer = tf.keras.initializers.GlorotUniform(seed=seed)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((input_size, input_size, 3)),
            tf.keras.layers.Rescaling(1 / 255.0),
            tf.keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=initializer),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(
                len(CLASSES), activation="softmax", kernel_initializer=initializer
            ),
        ]
    )
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.h5"
        model.save(path)
        return store.add(
            name,
            path,
            {
                "class_names": list(CLASSES),
                "input_size": [input_size, input_size],
                "format": "keras-h5",
            },
        )


def image_bytes(
    colour: tuple[int, int, int] = (200, 40, 40), size=(64, 48), fmt: str = "JPEG"
) -> bytes:
    """An image of two halves (the colour and its complement), encoded as JPEG or PNG."""
    image = Image.new("RGB", size, colour)
    image.paste(tuple(255 - c for c in colour), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def noise_png(side: int, seed: int = 0) -> bytes:
    """A PNG of random pixels: large for its size, since noise does not compress."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_image_folders(
    root, per_class: int = 12, size: int = 32, classes=("red", "green", "blue"), seed: int = 0
):
    """A learnable image set, one folder per class: noisy images of one dominant colour
    (another seed draws other images of the same classes: held-out data)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    palette = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, (size, size, 3))
            pixels = np.clip(np.array(palette[name]) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG of that size (signature, header chunk, end): what a
    decompression bomb shows before anything is decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")

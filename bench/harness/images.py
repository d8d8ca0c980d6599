"""Request payloads drawn from a real image folder (any depth), so sizes vary as real ones do."""

import random
from pathlib import Path

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def load(folder: str | Path, limit: int = 2000, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """Up to `limit` images (name, bytes, content type), a seeded sample of the folder."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in CONTENT_TYPES)
    if not files:
        raise ValueError(f"{folder} holds no JPEG or PNG image")
    random.Random(seed).shuffle(files)
    return [(p.name, p.read_bytes(), CONTENT_TYPES[p.suffix.lower()]) for p in files[:limit]]


def sequence(images: list, count: int, seed: int) -> list:
    """The images the requests carry, in order: the same for every policy of a run."""
    rng = random.Random(seed)
    return [rng.choice(images) for _ in range(count)]

"""An image directory laid out one folder per class (the layout of animals4), checked and split.

Splitting works on the file list (shuffled with a seed), so a single validation split and
k-fold cross-validation see the same data the same way.
"""

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from straightline_common.errors import InvalidArgument, NotFound

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
Files = list[tuple[Path, int]]  # (path, class index)


@dataclass(frozen=True)
class ImageSet:
    class_names: list[str]
    files: list[tuple[Path, int]]  # (path, class index), shuffled

    def fingerprint(self) -> str:
        """SHA-256 over the relative paths and sizes of every file: same data, same print."""
        digest = hashlib.sha256()
        for path, label in sorted(self.files):
            digest.update(f"{self.class_names[label]}/{path.name}:{path.stat().st_size}\n".encode())
        return digest.hexdigest()

    def split(self, validation_fraction: float) -> tuple[Files, Files]:
        cut = max(1, round(len(self.files) * validation_fraction))
        return self.files[cut:], self.files[:cut]

    def folds(self, k: int) -> Iterator[tuple[Files, Files]]:
        """(training, validation) file lists for each of k folds."""
        for fold in range(k):
            validation = self.files[fold::k]
            training = [f for i, f in enumerate(self.files) if i % k != fold]
            yield training, validation


def load(directory: str, seed: int) -> ImageSet:
    root = Path(directory)
    if not root.is_dir():
        raise NotFound(f"dataset {directory} does not exist or is not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise InvalidArgument(
            f"dataset {directory} must hold one sub-folder of images per class, and at least "
            f"two classes; found {len(class_dirs)}"
        )
    files = []
    for label, class_dir in enumerate(class_dirs):
        images = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InvalidArgument(
                f"class folder {class_dir.name!r} of dataset {directory} holds no JPEG or PNG"
            )
        files += [(path, label) for path in images]
    random.Random(seed).shuffle(files)
    return ImageSet([d.name for d in class_dirs], files)

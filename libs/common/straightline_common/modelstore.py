"""The model store: a directory of model versions, each a Keras `.h5` with its metadata.

    <root>/<name>/<version>/model.h5
    <root>/<name>/<version>/metadata.json

metadata.json holds at least `class_names` and `input_size` ([height, width]); the devrunner
adds metrics, parameters, the dataset fingerprint and the job. Versions are positive integers
as strings; "latest" is the highest.
"""

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from straightline_common.errors import InvalidArgument, NotFound

MODEL_FILE = "model.h5"
METADATA_FILE = "metadata.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    directory: Path
    metadata: dict

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def input_size(self) -> tuple[int, int]:
        height, width = self.metadata["input_size"]
        return int(height), int(width)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgument(
            f"model name {name!r} is not valid: use 1-63 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


class ModelStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def versions(self, name: str) -> list[str]:
        directory = self.root / name
        if not directory.is_dir():
            return []
        found = [
            entry.name
            for entry in directory.iterdir()
            if entry.name.isdigit() and (entry / METADATA_FILE).is_file()
        ]
        return sorted(found, key=int)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(entry.name for entry in self.root.iterdir() if self.versions(entry.name))

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        """The version asked for, or the latest when `version` is empty."""
        versions = self.versions(name)
        if not versions:
            raise NotFound(f"model {name!r} is not in the model store")
        chosen = version or versions[-1]
        if chosen not in versions:
            raise NotFound(
                f"model {name!r} has no version {chosen!r}; it has {', '.join(versions)}"
            )
        directory = self.root / name / chosen
        metadata = json.loads((directory / METADATA_FILE).read_text())
        return ModelVersion(name, chosen, directory, metadata)

    def latest(self) -> list[ModelVersion]:
        """The latest version of every model."""
        return [self.resolve(name) for name in self.names()]

    def next_version(self, name: str) -> str:
        versions = self.versions(check_name(name))
        return str(int(versions[-1]) + 1) if versions else "1"

    def add(self, name: str, model_file: Path, metadata: dict) -> ModelVersion:
        """Stores a new version of `name` (the file is moved in); returns it."""
        version = self.next_version(name)
        directory = self.root / name / version
        directory.mkdir(parents=True)
        target = directory / MODEL_FILE
        shutil.move(model_file, target)  # may cross file systems (a container's /tmp)
        record = {
            **metadata,
            "name": name,
            "version": version,
            "checksum": "sha256:" + file_sha256(target),
        }
        (directory / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return ModelVersion(name, version, directory, record)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

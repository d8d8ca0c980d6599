"""The model store: a directory of model versions, each a Keras `.h5` with its metadata.

    <root>/<name>/<version>/model.h5
    <root>/<name>/<version>/metadata.json

metadata.json holds at least `class_names` and `input_size` ([height, width]); the devrunner
adds metrics, parameters, the dataset fingerprint and the job. Versions are positive integers
as strings; "latest" is the highest.

With a remote (an S3 location, `open_store(root, s3_url)`), the store holds the versions of
both: listing shows them all, and resolving a version only the remote has fetches it first.
"""

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from straightline_common.config import Setting, parse_s3_url
from straightline_common.errors import FailedPrecondition, InvalidArgument, NotFound
from straightline_common.names import check_model, check_model_name, inside

if TYPE_CHECKING:  # s3models imports this module
    from straightline_common.s3models import S3Models

MODEL_FILE = "model.h5"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    directory: Path
    metadata: dict[str, Any]

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


def s3_url_setting(purpose: str) -> Setting:
    """The setting of a service's S3 location of model versions."""
    return Setting(
        "model_s3_url",
        "STRAIGHTLINE_MODEL_S3_URL",
        parse_s3_url,
        "",
        f"{purpose} (s3://BUCKET[/PREFIX]; credentials, region, endpoint: AWS's usual settings)",
    )


def open_store(root: str | Path, s3_url: str = "") -> "ModelStore":
    """The store at `root`, with the S3 location `s3_url` as its remote when given."""
    if not s3_url:
        return ModelStore(root)
    from straightline_common.s3models import S3Models  # boto3 only where S3 is used

    return ModelStore(root, remote=S3Models(s3_url))


class ModelStore:
    def __init__(self, root: str | Path, remote: "S3Models | None" = None) -> None:
        self.root = Path(root)
        self.remote = remote

    def versions(self, name: str) -> list[str]:
        found = set(self._local_versions(check_model_name(name)))
        if self.remote is not None:
            found.update(self.remote.versions(name))
        return sorted(found, key=int)

    def names(self) -> list[str]:
        """The models with at least one version; entries whose names are not valid model
        names (put there by hand, or by another tool in the bucket) are not models."""
        local = [e.name for e in self.root.iterdir()] if self.root.is_dir() else []
        names = {n for n in local if _is_model_name(n) and self._local_versions(n)}
        if self.remote is not None:
            names.update(filter(_is_model_name, self.remote.names()))
        return sorted(names)

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        """The version asked for, or the latest when `version` is empty."""
        name, version = check_model(name, version)
        versions = self.versions(name)
        if not versions:
            raise NotFound(f"model {name!r} is not in the model store")
        chosen = version or versions[-1]
        if chosen not in versions:
            raise NotFound(
                f"model {name!r} has no version {chosen!r}; it has {', '.join(versions)}"
            )
        directory = inside(self.root, name, chosen)
        if chosen not in self._local_versions(name) and self.remote is not None:
            self.remote.fetch(name, chosen, self.root)
        metadata = json.loads((directory / METADATA_FILE).read_text())
        return ModelVersion(name, chosen, directory, metadata)

    def latest(self) -> list[ModelVersion]:
        """The latest version of every model."""
        return [self.resolve(name) for name in self.names()]

    def next_version(self, name: str) -> str:
        versions = self.versions(name)
        return str(int(versions[-1]) + 1) if versions else "1"

    def add(self, name: str, model_file: Path, metadata: dict[str, Any]) -> ModelVersion:
        """Stores a new version of `name` (the file is moved in); returns it."""
        version = self.next_version(name)
        directory = inside(self.root, name, version)
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

    def publish(self, version: ModelVersion) -> str:
        """Copies a stored version to the remote; returns where it is there."""
        if self.remote is None:
            raise FailedPrecondition("this model store has no remote to publish to")
        return self.remote.publish(version.directory, version.name, version.version)

    def _local_versions(self, name: str) -> list[str]:
        directory = inside(self.root, name)
        if not directory.is_dir():
            return []
        return [
            entry.name
            for entry in directory.iterdir()
            if entry.name.isdigit() and (entry / METADATA_FILE).is_file()
        ]


def _is_model_name(name: str) -> bool:
    try:
        check_model_name(name)
    except InvalidArgument:
        return False
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

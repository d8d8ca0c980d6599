"""An S3 location of model versions, laid out as the model store is:

    s3://<bucket>/<prefix>/<name>/<version>/model.h5
    s3://<bucket>/<prefix>/<name>/<version>/metadata.json

The devrunner publishes packaged versions there; a model server or a Lambda function that
does not find a version on its disk fetches it from there. The client comes from the standard
AWS configuration (credentials, region, and `AWS_ENDPOINT_URL_S3` for an S3-compatible
endpoint). metadata.json is written last and read first: a version without it is incomplete.
"""

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from straightline_common.config import parse_s3_url
from straightline_common.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unavailable,
)
from straightline_common.modelstore import METADATA_FILE, MODEL_FILE, file_sha256

T = TypeVar("T")


class S3Models:
    def __init__(self, url: str, client: Any = None) -> None:
        """`url`: s3://BUCKET[/PREFIX] (ValueError otherwise)."""
        parsed = urlparse(parse_s3_url(url))
        if not parsed.netloc:
            raise ValueError("expected an S3 location, s3://BUCKET[/PREFIX]")
        prefix = parsed.path.strip("/")
        self.bucket, self.prefix = parsed.netloc, f"{prefix}/" if prefix else ""
        self._client = client or boto3.client("s3")

    def uri(self, name: str, version: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}/{version}/"

    def names(self) -> list[str]:
        """The models with at least one complete version."""
        return sorted({name for name, _ in self._complete_versions(self.prefix)})

    def versions(self, name: str) -> list[str]:
        """The complete versions (with their metadata) of `name`."""
        found = self._complete_versions(f"{self.prefix}{name}/")
        return sorted((version for _, version in found), key=int)

    def _complete_versions(self, folder: str) -> set[tuple[str, str]]:
        found = set()
        for key in self._keys(folder):
            parts = key[len(self.prefix) :].split("/")  # name, version, file
            if len(parts) == 3 and parts[1].isdigit() and parts[2] == METADATA_FILE:
                found.add((parts[0], parts[1]))
        return found

    def publish(self, directory: Path, name: str, version: str) -> str:
        """Uploads a stored version (the model file, then its metadata); returns its URI."""
        for file in (MODEL_FILE, METADATA_FILE):
            key = self._key(name, version, file)
            self._call(self._client.upload_file, str(directory / file), self.bucket, key)
        return self.uri(name, version)

    def fetch(self, name: str, version: str, root: Path) -> Path:
        """Downloads a version into `root/name/version` (whole or not at all); returns it."""
        target = root / name / version
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{version}-"))
        try:
            for file in (METADATA_FILE, MODEL_FILE):
                key = self._key(name, version, file)
                self._call(self._client.download_file, self.bucket, key, str(scratch / file))
            self._check_checksum(scratch, name, version)
            try:
                scratch.rename(target)  # atomic: readers see the whole version or none of it
            except OSError:
                if not target.is_dir():
                    raise
                # else another process fetched it meanwhile
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def _check_checksum(self, directory: Path, name: str, version: str) -> None:
        expected = json.loads((directory / METADATA_FILE).read_text()).get("checksum", "")
        actual = "sha256:" + file_sha256(directory / MODEL_FILE)
        if expected and expected != actual:
            raise FailedPrecondition(
                f"{self.uri(name, version)}{MODEL_FILE} does not match the checksum in its "
                "metadata; publish the version again"
            )

    def _key(self, name: str, version: str, file: str) -> str:
        return f"{self.prefix}{name}/{version}/{file}"

    def _keys(self, prefix: str) -> list[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return self._call(  # each page is a request
            lambda: [entry["Key"] for page in pages for entry in page.get("Contents", [])]
        )

    def _call(self, action: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Calls `action` (of boto3), turning boto3's errors into domain errors."""
        where = f"s3://{self.bucket}/{self.prefix}"
        try:
            return action(*args, **kwargs)
        except ClientError as error:
            raise _client_error(where, error) from None
        except S3UploadFailedError as error:
            raise Unavailable(f"uploading to {where} failed: {error}") from None
        except BotoCoreError as error:
            raise Unavailable(f"{where} cannot be reached: {error}") from None


def _client_error(where: str, error: ClientError) -> ServiceError:
    code = error.response.get("Error", {}).get("Code", "")
    if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
        return NotFound(f"{where} has no such object or bucket ({code})")
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return PermissionDenied(f"{where} refused access ({code}); check the AWS credentials")
    return Unavailable(f"{where} answered {code or error}")

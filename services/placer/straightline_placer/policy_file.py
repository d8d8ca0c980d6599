"""The policy as changed at run time, kept in a file so that a restarted placer starts from it
and the placers of an active-active set agree on it: the v1 `Policy` message as JSON, written
atomically (mode 0600) under an advisory lock (`FILE.lock`), read at start-up and whenever its
version (inode, size, modification time) changes."""

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import json_format

from straightline.v1 import placer_pb2
from straightline_common.config import ConfigError


class PolicyFileError(ConfigError):
    """The file exists but is not a policy this placer can read."""


class PolicyFile:
    """One placer's view of the file: which version of it the placer last read or wrote."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None

    def changed(self) -> placer_pb2.Policy | None:
        """The saved policy if the file changed since this placer last read or wrote it, else
        None; raises PolicyFileError (once per version) when it cannot be read as one."""
        current = version(self.path)
        if current == self._seen:
            return None
        self._seen = current
        return load(self.path)

    def save(self, policy: placer_pb2.Policy) -> None:
        save(self.path, policy)
        self._seen = version(self.path)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.path)


def save(path: str, policy: placer_pb2.Policy) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json_format.MessageToJson(policy, preserving_proto_field_name=True)
    handle, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(scratch, target)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def load(path: str) -> placer_pb2.Policy | None:
    """The saved policy, or None when nothing was saved yet."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise PolicyFileError(f"cannot read the policy file {path}: {error.strerror}") from None
    try:
        return json_format.Parse(text, placer_pb2.Policy())
    except (json_format.ParseError, json.JSONDecodeError) as error:
        raise PolicyFileError(
            f"the policy file {path} is not a saved policy ({error}); fix it, or remove it to "
            "start from the configured policy"
        ) from None


def version(path: str) -> tuple[int, int, int] | None:
    """What changes whenever the file is replaced or written; None when there is none."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Holds FILE.lock exclusively: one placer's read-change-write at a time."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        os.chmod(lock_path, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

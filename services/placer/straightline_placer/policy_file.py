"""The policy as changed at run time, kept in a file so that a restarted placer starts from it:
the v1 `Policy` message as JSON, written atomically (mode 0600), read at start-up."""

import json
import os
import tempfile
from pathlib import Path

from google.protobuf import json_format

from straightline.v1 import placer_pb2


class PolicyFileError(Exception):
    """The file exists but is not a policy this placer can read."""


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

"""The one validator of every name that becomes a path, a URL or a key: model names and
versions, instance ids, dataset names. A name is refused, never cleaned up; the refusal says
what a valid name is and does not echo what was sent (it may be huge or hostile).

Model names: 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or a
digit, with no '..' (no separator can appear, so a name is one path segment and one URL
segment). Versions: a positive integer of up to 9 digits, or empty for the latest.
"""

import re
from pathlib import Path

from straightline_common.errors import InvalidArgument

_MODEL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]|\.(?!\.)){0,62}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
MODEL_NAME_RULE = (
    "1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "without '..'"
)
ID_RULE = "1-128 letters, digits, '.', '_', ':', '@' or '-', starting with a letter or digit"


def shown(value: str) -> str:
    """A value as an error message may quote it: short printable ones in full, others not."""
    if len(value) <= 64 and value.isprintable():
        return repr(value)
    return f"(a value of {len(value)} characters)"


def check_model_name(name: str, field: str = "model name") -> str:
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidArgument(f"{field} {shown(name)} is not valid: use {MODEL_NAME_RULE}")
    return name


def check_version(version: str, field: str = "model version") -> str:
    """An empty version (the latest) or a positive integer."""
    if version and not _VERSION.fullmatch(version):
        raise InvalidArgument(
            f"{field} {shown(version)} is not valid: use a positive integer, or none for the latest"
        )
    return version


def check_model(name: str, version: str = "") -> tuple[str, str]:
    return check_model_name(name), check_version(version)


def check_id(value: str, field: str) -> str:
    """An identifier chosen by a caller (an instance id, a request id, a job id)."""
    if not _ID.fullmatch(value):
        raise InvalidArgument(f"{field} {shown(value)} is not valid: use {ID_RULE}")
    return value


def inside(root: Path, *parts: str) -> Path:
    """`root` joined with `parts`, refused when the result (symbolic links resolved) is not
    under `root`: the last guard of every path built from a request."""
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise InvalidArgument("the name points outside its directory; use a plain name")
    return path

"""Who may call what: roles, the identities that hold them, and the check every service runs
on every RPC (in `grpcserver`'s interceptor; health and reflection stay open).

An identity is proved by one of:
- a bearer token (`authorization: Bearer <token>` metadata) from the deployment's tokens file,
  one token per role, compared in constant time. Started with no tokens file configured, a
  service uses the default path and, when nothing is there, writes new tokens into it (mode
  0600, created atomically) and logs where, the way Jupyter does: a developer's loopback
  processes of one user then share it with no set-up, and nobody else can read it.
- (with TLS) the client certificate: its SAN URI `spiffe://straightline/<role>/<name>`.

Each service declares, per method, the roles allowed (`Access`); a method it does not list is
refused to everyone.
"""

import contextvars
import enum
import hmac
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from straightline_common.config import Setting
from straightline_common.errors import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

TOKENS_FILE_ENV = "STRAIGHTLINE_TOKENS_FILE"
SPIFFE_PREFIX = "spiffe://straightline/"
TOKENS_FILE_SETTING = Setting(
    "tokens_file",
    TOKENS_FILE_ENV,
    str,
    "",
    "JSON file of the deployment's bearer tokens, one per role; default "
    "$XDG_STATE_HOME/straightline/tokens.json, written with new tokens when absent",
)


class Role(enum.Enum):
    ADAPTER = "adapter"  # reports its instance's capacity to the placer
    PLACER = "placer"  # forwards requests to adapters
    OPERATOR = "operator"  # changes the policy, submits and cancels jobs, and reads
    CLIENT = "client"  # sends inference requests and reads


@dataclass(frozen=True)
class Identity:
    role: Role
    name: str  # the certificate's name, or the role's for a token
    # A certificate names one party (adapter/flask); a token is shared by a whole role.
    certified: bool = False

    def __str__(self) -> str:
        return f"{self.role.value}/{self.name}"


# Full method name ("/straightline.v1.PlacerService/Infer") -> roles allowed.
Access = Mapping[str, frozenset[Role]]
READERS = frozenset({Role.CLIENT, Role.OPERATOR})
_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "straightline_identity", default=None
)


def access_of(service: str, methods: Mapping[str, frozenset[Role]]) -> dict[str, frozenset[Role]]:
    """A service's methods (short names) as an Access table."""
    return {f"/{service}/{method}": roles for method, roles in methods.items()}


def current_identity() -> Identity | None:
    """The identity of the RPC being served on this thread."""
    return _current.get()


def set_current_identity(identity: Identity | None) -> contextvars.Token[Identity | None]:
    return _current.set(identity)


class Tokens:
    """The deployment's bearer tokens, one per role."""

    def __init__(self, by_role: Mapping[Role, str]) -> None:
        self._by_role = dict(by_role)

    def of(self, role: Role) -> str:
        return self._by_role[role]

    def identify(self, token: str) -> Identity | None:
        found = None
        for role, expected in self._by_role.items():  # every one compared: constant time
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = Identity(role, role.value)
        return found


def default_tokens_path() -> Path:
    configured = os.environ.get(TOKENS_FILE_ENV)
    if configured:
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "straightline" / "tokens.json"


def server_tokens(tokens_file: str) -> Tokens:
    """A service's tokens: from its tokens_file setting, else the default file, made when
    absent."""
    return load_tokens(Path(tokens_file) if tokens_file else None, create=True)


def load_tokens(path: Path | None = None, create: bool = False) -> Tokens:
    """The tokens in `path` (default: `default_tokens_path()`); with `create`, new ones are
    written there first when the file does not exist."""
    path = path or default_tokens_path()
    if create and not path.exists():
        _create_tokens_file(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise Unauthenticated(
            f"no tokens file at {path}: start a StraightLine service once (it writes one), or "
            f"point {TOKENS_FILE_ENV} at the deployment's"
        ) from None
    except (OSError, ValueError) as error:
        raise Unauthenticated(f"cannot read the tokens file {path}: {error}") from None
    return Tokens({role: str(document[role.value]) for role in Role})


def _create_tokens_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump({role.value: secrets.token_urlsafe(32) for role in Role}, file, indent=2)
    try:
        os.link(draft, path)  # atomic: another process's file, if it won the race, stays
        log.warning(
            "no credentials were configured: wrote new bearer tokens, readable only by this "
            "user; clients of this machine read them from there",
            extra={"tokens_file": str(path)},
        )
    except FileExistsError:
        pass
    finally:
        os.unlink(draft)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value.removeprefix("Bearer ")
    return None


def identity_from_uri(uri: str) -> Identity | None:
    """The identity a certificate's SAN URI names, e.g. spiffe://straightline/adapter/flask."""
    if not uri.startswith(SPIFFE_PREFIX):
        return None
    role, _, name = uri.removeprefix(SPIFFE_PREFIX).partition("/")
    if role not in Role._value2member_map_ or not name:
        return None
    return Identity(Role(role), name, certified=True)


def authorize(identity: Identity | None, method: str, access: Access) -> Identity:
    """The caller's identity when its role may call `method`; else the refusal."""
    if identity is None:
        raise Unauthenticated(
            f"{method} needs credentials: a client certificate, or an 'authorization: Bearer' "
            f"token from the deployment's tokens file ({TOKENS_FILE_ENV})"
        )
    allowed = access.get(method, frozenset())
    if identity.role not in allowed:
        roles = ", ".join(sorted(role.value for role in allowed)) or "no caller"
        raise PermissionDenied(f"{method} is for {roles}; this caller is {identity.role.value}")
    return identity

"""Domain errors, raised by the transport-agnostic cores of every service.

Each says what went wrong in a sentence a user can act on. Only `grpcserver` knows which gRPC
status code each one becomes.
"""


class ServiceError(Exception):
    """Base of every error a service reports to its caller."""


class InvalidArgument(ServiceError):
    """The request is malformed; sending it again unchanged will fail again."""


class NotFound(ServiceError):
    """Something the request names (a model, a job, an instance) does not exist."""


class AlreadyExists(ServiceError):
    """Something the request would create exists already."""


class FailedPrecondition(ServiceError):
    """The system is not in a state where the request can run (e.g. no GPU on this host)."""


class ResourceExhausted(ServiceError):
    """No capacity now; the caller may retry later or elsewhere."""


class Unavailable(ServiceError):
    """A platform or dependency cannot be reached now."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline passed before an answer."""


class Unauthenticated(ServiceError):
    """The request carries no valid credentials."""


class PermissionDenied(ServiceError):
    """The caller may not do this."""


class Internal(ServiceError):
    """Something failed inside a service; its log has the details."""


class Cancelled(ServiceError):
    """The service ended the call (a stream that went quiet for too long)."""


# The canonical code name of each error: the gRPC status code names, also used over HTTP
# (the model server) and in Lambda answers.
CODE_NAMES: dict[type[ServiceError], str] = {
    InvalidArgument: "INVALID_ARGUMENT",
    NotFound: "NOT_FOUND",
    AlreadyExists: "ALREADY_EXISTS",
    FailedPrecondition: "FAILED_PRECONDITION",
    ResourceExhausted: "RESOURCE_EXHAUSTED",
    Unavailable: "UNAVAILABLE",
    DeadlineExceeded: "DEADLINE_EXCEEDED",
    Unauthenticated: "UNAUTHENTICATED",
    PermissionDenied: "PERMISSION_DENIED",
    Internal: "INTERNAL",
    Cancelled: "CANCELLED",
}
_ERROR_OF_CODE = {name: error_class for error_class, name in CODE_NAMES.items()}


def code_name(error: ServiceError) -> str:
    """The code name of an error (of its nearest known base class); INTERNAL if none."""
    for error_class in type(error).__mro__:
        if error_class in CODE_NAMES:
            return CODE_NAMES[error_class]
    return "INTERNAL"


def from_code_name(name: str, message: str) -> ServiceError:
    """The error a code name stands for, e.g. from an HTTP answer; Internal if unknown."""
    return _ERROR_OF_CODE.get(name, Internal)(message)

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

"""The start-up and shut-down every gRPC service's `__main__` shares.

    sys.exit(serve("straightline-placer", config.load, PlacerServer))

Reads the configuration (a wrong one exits with status 2 and the sentence that says what is
wrong), configures JSON logs and OpenTelemetry tracing under the service's name, builds and
starts the server, and on SIGTERM or SIGINT stops it and flushes the last spans. A server that
cannot start exits with status 1 and the reason in the log."""

import logging
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

from straightline_common.config import ConfigError
from straightline_common.errors import ServiceError
from straightline_common.grpcserver import ShutdownSignal
from straightline_common.logs import configure_logging
from straightline_common.telemetry import configure_tracing

log = logging.getLogger(__name__)


class ServiceConfig(Protocol):
    @property
    def service_name(self) -> str:
        """The name logs and traces carry: straightline-placer, straightline-adapter-flask..."""

    @property
    def log_level(self) -> str: ...


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self, grace: float = ...) -> None: ...


C = TypeVar("C", bound=ServiceConfig)


def serve(
    program: str,
    load: Callable[[list[str] | None], C],
    build: Callable[[C], Server],
    argv: list[str] | None = None,
) -> int:
    """Runs the service until a signal; returns the process's exit status."""
    try:
        config = load(argv)
    except ConfigError as error:
        print(f"{program}: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging(config.service_name.removeprefix("straightline-"), config.log_level)
    provider = configure_tracing(config.service_name)
    shutdown = ShutdownSignal()
    try:
        server = build(config)
    except ConfigError as error:  # what only building finds: a policy file that cannot be read
        print(f"{program}: {error}", file=sys.stderr)
        return 2
    try:
        server.start()
    except ServiceError as error:
        log.error("cannot start: %s", error)
        server.stop(0)
        return 1
    shutdown.wait_then_stop(server.stop, provider)
    return 0

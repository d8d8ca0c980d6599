"""Entry point: `python -m straightline_placer --help`."""

import sys

from straightline_common.config import ConfigError
from straightline_common.grpcserver import ShutdownSignal
from straightline_common.logs import configure_logging
from straightline_common.telemetry import configure_tracing
from straightline_placer import config
from straightline_placer.policy_file import PolicyFileError
from straightline_placer.server import PlacerServer


def main(argv: list[str] | None = None) -> int:
    try:
        settings = config.load(argv)
    except ConfigError as error:
        print(f"straightline-placer: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("placer", settings.log_level)
    provider = configure_tracing("straightline-placer")
    try:
        server = PlacerServer(settings)
    except PolicyFileError as error:
        print(f"straightline-placer: {error}", file=sys.stderr)
        return 2
    shutdown = ShutdownSignal()
    server.start()
    shutdown.wait_then_stop(server.stop, provider)
    return 0


if __name__ == "__main__":
    sys.exit(main())

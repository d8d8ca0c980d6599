"""Entry point: `python -m straightline_placer --help`."""

import sys

from straightline_common.serve import serve
from straightline_placer import config
from straightline_placer.server import PlacerServer


def main(argv: list[str] | None = None) -> int:
    return serve("straightline-placer", config.load, PlacerServer, argv)


if __name__ == "__main__":
    sys.exit(main())

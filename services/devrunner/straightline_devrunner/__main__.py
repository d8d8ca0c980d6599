"""`python -m straightline_devrunner --store DIR [--runner docker|local] [--config FILE]`"""

import sys

from straightline_common.serve import serve
from straightline_devrunner import config
from straightline_devrunner.server import DevRunnerServer


def main(argv: list[str] | None = None) -> int:
    return serve("straightline-devrunner", config.load, DevRunnerServer, argv)


if __name__ == "__main__":
    sys.exit(main())

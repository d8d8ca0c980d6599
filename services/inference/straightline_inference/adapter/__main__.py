"""`python -m straightline_inference.adapter --platform flask|docker|serverless ...`"""

import sys

from straightline_common.serve import serve
from straightline_inference.adapter import config
from straightline_inference.adapter.server import AdapterServer


def main(argv: list[str] | None = None) -> int:
    return serve("straightline-adapter", config.load, AdapterServer, argv)


if __name__ == "__main__":
    sys.exit(main())

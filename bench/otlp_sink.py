"""An OTLP receiver in its own process, so that exporting spans costs what it would with a
real collector: `python -m bench.otlp_sink --port-file F` from the repository root."""

import signal
import sys
import threading

from straightline_common.processes import write_port_file
from tests.support.otlp import OtlpReceiver


def main(port_file: str) -> None:
    receiver = OtlpReceiver().start()
    write_port_file(port_file, {"grpc": receiver.port})
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    receiver.stop()


if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--port-file") + 1])

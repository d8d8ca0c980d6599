"""`GET /healthz` on an address of its own, answered by a thread of its own: a supervisor's
probe is not queued behind the requests that keep every worker busy, so one slow answer
means a hung or stopped server, not load."""

import http.server
import threading
from typing import Any

_BODY = b'{"status": "SERVING"}'


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path == "/healthz"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_BODY) if found else 0))
        self.end_headers()
        if found:
            self.wfile.write(_BODY)

    def log_message(self, *_: Any) -> None:  # probes every second: not worth a log line each
        pass


def serve_health(host: str, port: int) -> int:
    """Starts the listener (daemon thread); returns its bound port."""
    server = http.server.ThreadingHTTPServer((host, port), _Health)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server.server_address[1]

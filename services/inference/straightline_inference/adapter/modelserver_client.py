"""HTTP(S) client of the REST model server, with a pooled connection per worker."""

import json
import time
from typing import Any

import urllib3
from opentelemetry import propagate

from straightline_common.errors import DeadlineExceeded, Unavailable, from_code_name
from straightline_common.tls import TlsFiles, https_client_context
from straightline_inference.adapter.backend import Answer, PredictCall
from straightline_inference.batching import BatchCeiling

# How long a readiness probe waits for /healthz (behind the requests in the workers' queue).
PROBE_TIMEOUT_S = 2.0


class HttpEndpoint:
    """A pooled HTTP(S) client of one server, its network failures as domain errors.
    `tls`: over HTTPS, presenting this process's certificate (the server requires one)."""

    def __init__(self, base_url: str, connections: int = 8, tls: TlsFiles | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        context = None if tls is None else https_client_context(tls)
        self._http = urllib3.PoolManager(
            maxsize=connections, block=False, retries=False, ssl_context=context
        )

    def close(self) -> None:
        self._http.clear()

    def send(self, method: str, path: str, timeout: float, **options: Any) -> Any:
        """The response; Unavailable when the server cannot be reached, DeadlineExceeded when
        it does not answer in time."""
        try:
            return self._http.request(
                method, self.base_url + path, timeout=urllib3.Timeout(total=timeout), **options
            )
        except urllib3.exceptions.NewConnectionError:  # (a ConnectTimeoutError in urllib3 2)
            raise Unavailable(f"the server at {self.base_url} refuses connections") from None
        except urllib3.exceptions.TimeoutError:
            raise DeadlineExceeded(
                f"the server at {self.base_url} did not answer in {timeout:.1f} s"
            ) from None
        except urllib3.exceptions.HTTPError as error:
            raise Unavailable(
                f"the server at {self.base_url} cannot be reached: {type(error).__name__}"
            ) from None


class ModelServerClient(HttpEndpoint):
    """StraightLine's REST model server (its v1 API)."""

    def predict(self, call: PredictCall, timeout: float) -> Answer:
        path = f"/v1/models/{call.model_name}"
        if call.model_version:
            path += f"/versions/{call.model_version}"
        headers = {"Content-Type": call.content_type, "X-Request-Id": call.request_id}
        propagate.inject(headers)
        started = time.perf_counter()
        body = self._request(
            "POST",
            f"{path}/predict?top_k={call.top_k}{_ceiling_query(call.batching)}",
            timeout,
            body=call.payload,
            headers=headers,
        )
        elapsed = time.perf_counter() - started
        queued = _queue_seconds(body, elapsed)
        return Answer(
            model=body["model"],
            classes=body["classes"],
            queue_seconds=queued,
            execution_seconds=elapsed - queued,
        )

    def probe(self, timeout: float = PROBE_TIMEOUT_S) -> None:
        """Raises Unavailable or DeadlineExceeded unless /healthz answers 200 in time."""
        self._request("GET", "/healthz", timeout)

    def wait_ready(self, timeout: float) -> None:
        """Waits until /healthz answers 200 (the models are loaded and warm)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._request("GET", "/healthz", 5.0)
                return
            except (Unavailable, DeadlineExceeded):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _request(self, method: str, path: str, timeout: float, **options: Any) -> dict[str, Any]:
        response = self.send(method, path, timeout, **options)
        try:
            body: dict[str, Any] = json.loads(response.data)
        except ValueError:
            raise Unavailable(
                f"the model server at {self.base_url} answered {response.status} without JSON"
            ) from None
        if response.status >= 400:
            refusal = body.get("error", {})
            raise from_code_name(refusal.get("code", ""), refusal.get("message", str(body)))
        return body


def _ceiling_query(ceiling: BatchCeiling | None) -> str:
    if ceiling is None:
        return ""
    query = f"&max_batch_size={ceiling.max_batch_size}" if ceiling.max_batch_size else ""
    if ceiling.max_queue_delay_s is not None:
        query += f"&max_queue_delay_ms={ceiling.max_queue_delay_s * 1e3:g}"
    return query


def _queue_seconds(body: dict[str, Any], elapsed: float) -> float:
    """How long the request waited in the model server for its batch to start (servers that
    predate `timings.queue_ms`, or report nonsense: 0), at most the time it took."""
    timings = body.get("timings")
    queue_ms = timings.get("queue_ms", 0.0) if isinstance(timings, dict) else 0.0
    if not isinstance(queue_ms, int | float) or not queue_ms >= 0:
        return 0.0
    return min(queue_ms / 1e3, elapsed)

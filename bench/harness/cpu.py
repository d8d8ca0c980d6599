"""The machine's CPU use while a run goes, sampled from /proc/stat once a second."""

import threading
import time


def _busy_and_total() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class CpuSampler:
    def __init__(self, interval_s: float = 1.0):
        self.samples: list[tuple[float, float]] = []  # (seconds since start, percent busy)
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        busy, total = _busy_and_total()
        while not self._stop.wait(self._interval):
            now_busy, now_total = _busy_and_total()
            percent = 100.0 * (now_busy - busy) / max(1, now_total - total)
            self.samples.append((time.monotonic() - self._started, round(percent, 1)))
            busy, total = now_busy, now_total

"""Polling for a condition that other threads or processes bring about."""

import time


def wait_until(predicate, timeout=5.0, interval=0.02) -> bool:
    """True as soon as `predicate()` is, False if it is not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False

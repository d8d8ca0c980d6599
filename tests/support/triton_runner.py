"""Runs a command of `tritonclient_calls` (Triton's clients) in a process of its own; its JSON."""

import json
import subprocess
import sys


def run_tritonclient(address: str, token: str, command: str, *files) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.support.tritonclient_calls",
            address,
            token,
            command,
            *(str(f) for f in files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)

"""Runs a command of `tritonclient_calls` (Triton's clients) in a process of its own; its JSON."""

import json
import subprocess
import sys


def assert_grpc_protocol_errors(answer: dict) -> None:
    """What tritonclient.grpc's `errors` command must have seen: a bad image, an unknown
    model and a call without credentials, each with the status OIP clients expect."""
    assert answer["not_an_image"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "neither a JPEG nor a PNG" in answer["not_an_image"][1]
    assert answer["absent_model"][0] == "StatusCode.NOT_FOUND"
    assert answer["anonymous"][0] == "StatusCode.UNAUTHENTICATED"


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

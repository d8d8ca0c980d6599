"""The compose front ends: every test that takes `compose_command` runs once with
docker-compose v1 and once with the docker compose v2 plugin."""

import os
import shutil
import subprocess

import pytest

COMPOSE_COMMANDS = {"v1": ["docker-compose"], "v2": ["docker", "compose"]}


def is_installed(command: list[str]) -> bool:
    if not shutil.which(command[0]):
        return False
    return subprocess.run([*command, "version"], capture_output=True).returncode == 0


@pytest.fixture(params=sorted(COMPOSE_COMMANDS))
def compose_command(request) -> list[str]:
    """A front end that is not installed is skipped, or fails under
    STRAIGHTLINE_REQUIRE_DOCKER=1 (CI installs both: deploy/ci/install-compose-plugin.sh)."""
    command = COMPOSE_COMMANDS[request.param]
    if not is_installed(command):
        reason = f"`{' '.join(command)}` (compose {request.param}) is not installed"
        if os.environ.get("STRAIGHTLINE_REQUIRE_DOCKER") == "1":
            pytest.fail(f"STRAIGHTLINE_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)
    return command

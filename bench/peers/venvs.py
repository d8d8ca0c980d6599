"""The peers' own virtual environments, made on first use (none of them is in the project's
constraints): each holds one peer and what it needs; our model code and TensorFlow come from
the project's environment, after the peer's own packages on the path."""

import os
import subprocess
import sys
from pathlib import Path

from tests.support.mlserver import peer_pythonpath

ROOT = Path(__file__).resolve().parents[2]
PEERS = {
    "ray": ["ray[serve,haproxy]>=2.55"],
    "bentoml": ["bentoml>=1.4"],
}


def ensure(name: str) -> Path:
    """The peer's environment (`.venv-<name>` at the repository's root), made if absent."""
    venv = ROOT / f".venv-{name}"
    made = venv / ".installed"
    if made.exists():
        return venv
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *PEERS[name]], check=True)
    made.write_text(" ".join(PEERS[name]) + "\n")
    return venv


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a peer's process needs to import our model code (and TensorFlow) after its own
    packages; tracing off."""
    return {
        **os.environ,
        "PYTHONPATH": peer_pythonpath(),
        "OTEL_SDK_DISABLED": "true",
        **(extra or {}),
    }

"""AWS's Lambda Runtime Interface Emulator, taken from the aws-sam-cli wheel on PyPI.

`python -m straightline_inference.rie [TARGET]` makes sure the x86_64 binary is at TARGET
(default: the cache) and prints its path. Only the wheel is downloaded (no install).
"""

import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SAM_CLI_VERSION = "1.170.0"
_MEMBER = "samcli/local/rapid/aws-lambda-rie-x86_64"


def default_path() -> Path:
    cache = Path(os.environ.get("STRAIGHTLINE_CACHE_DIR", Path.home() / ".cache" / "straightline"))
    return cache / f"aws-lambda-rie-x86_64-{SAM_CLI_VERSION}"


def ensure_rie(target: Path | None = None) -> Path:
    target = Path(target or default_path())
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                f"aws-sam-cli=={SAM_CLI_VERSION}",
                "--dest",
                scratch,
            ],
            check=True,
        )
        wheel = next(Path(scratch).glob("aws_sam_cli-*.whl"))
        with zipfile.ZipFile(wheel) as archive, open(f"{target}.part", "wb") as out:
            out.write(archive.read(_MEMBER))
    os.chmod(
        f"{target}.part", stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    )
    os.replace(f"{target}.part", target)
    return target


if __name__ == "__main__":
    print(ensure_rie(Path(sys.argv[1]) if len(sys.argv) > 1 else None))

"""The paper's container customization: a verified model version, baked into the images
the Docker and serverless platforms run, tagged by model and version.

    straightline/model-server:<name>-<version>    straightline/lambda:<name>-<version>

Each is the platform's generic image plus the version's files at /models/<name>/<version>,
so it runs anywhere without the model store (e.g. as an AWS Lambda container image).
"""

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from straightline_common.errors import FailedPrecondition, Unavailable
from straightline_common.modelstore import ModelVersion

BASES = {"docker": "straightline/model-server", "serverless": "straightline/lambda"}
_DOCKERFILE = """ARG BASE
FROM ${BASE}
COPY --chown=65534:65534 model /models/%s/%s
"""


def package(
    client: Any,
    version: ModelVersion,
    platforms: list[str],
    base_tag: str = "dev",
    on_line: Callable[[str], None] = lambda text: None,
) -> dict[str, str]:
    """Builds one image per platform; returns the image tag by platform name."""
    from docker.errors import BuildError, DockerException, ImageNotFound

    images = {}
    with tempfile.TemporaryDirectory() as context:
        shutil.copytree(version.directory, Path(context) / "model")
        (Path(context) / "Dockerfile").write_text(_DOCKERFILE % (version.name, version.version))
        for platform in platforms:
            base = f"{BASES[platform]}:{base_tag}"
            tag = f"{BASES[platform]}:{version.name}-{version.version}"
            try:
                client.images.get(base)
                _, logs = client.images.build(
                    path=context, tag=tag, buildargs={"BASE": base}, rm=True, network_mode="none"
                )
            except ImageNotFound:
                raise FailedPrecondition(
                    f"base image {base} is missing; build it with deploy/images/build.sh"
                ) from None
            except (BuildError, DockerException) as error:
                raise Unavailable(f"building {tag} failed: {error}") from None
            for entry in logs:
                if entry.get("stream", "").strip():
                    on_line(entry["stream"].strip())
            images[platform] = tag
    return images

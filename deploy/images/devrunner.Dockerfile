# The devrunner service: accepts jobs and runs them as containers of straightline/trainer
# through the engine's socket, and builds the package images. It needs no TensorFlow itself.
# It runs as root because it talks to the Docker socket (root-equivalent: see README).
# Build from the repository root: deploy/images/build.sh does it.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY constraints.txt .
COPY libs/common libs/common
COPY services/devrunner services/devrunner
RUN pip install --no-cache-dir -c constraints.txt ./libs/common ./services/devrunner

ENTRYPOINT ["python", "-m", "straightline_devrunner"]

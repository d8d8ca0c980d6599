# The placer: Algorithm 1 over the adapters' heartbeats. No TensorFlow, no engine access.
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
COPY services/placer services/placer
RUN pip install --no-cache-dir -c constraints.txt ./libs/common ./services/placer
# Where the policy changed at run time is kept (a volume in compose), the placer's own.
RUN mkdir /state && chown 65534:65534 /state

USER 65534:65534
ENTRYPOINT ["python", "-m", "straightline_placer"]

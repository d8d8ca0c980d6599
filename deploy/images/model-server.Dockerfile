# The model server: the REST app (waitress, fixed worker threads) that the Docker platform
# runs, one container per slot group. Models are mounted read-only at /models.
# Build from the repository root: deploy/images/build.sh does it.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY constraints.txt .
# The heavy, rarely changing layer first.
RUN pip install --no-cache-dir -c constraints.txt tensorflow-cpu
COPY libs/common libs/common
COPY services/inference services/inference
RUN pip install --no-cache-dir -c constraints.txt ./libs/common "./services/inference[model]"

USER 65534:65534
ENTRYPOINT ["python", "-m", "straightline_inference.modelserver"]
CMD ["--store", "/models", "--listen", "127.0.0.1:8501", "--threads", "2"]

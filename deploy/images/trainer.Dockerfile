# The devrunner's job image: the trainer (train and verify jobs) on the model-server image's
# TensorFlow. The devrunner runs it without network, the dataset read-only at /data and the
# model store at /models.
ARG SERVER_IMAGE=straightline/model-server:dev
FROM ${SERVER_IMAGE}

USER root
COPY services/devrunner services/devrunner
RUN pip install --no-cache-dir -c constraints.txt "./services/devrunner[trainer]"
USER 65534:65534
ENTRYPOINT ["python", "-m", "straightline_devrunner.trainer"]

# The inference adapter, one image for the three platforms (--platform flask|docker|serverless).
# Built on the Lambda image, so it carries TensorFlow (the Flask platform runs its model
# server as a child process) and the Runtime Interface Emulator. The docker and serverless
# adapters start containers through the engine's socket, so the image runs as root.
# Build from the repository root: deploy/images/build.sh does it.
ARG LAMBDA_IMAGE=straightline/lambda:dev
FROM ${LAMBDA_IMAGE}

USER root
ENTRYPOINT ["python", "-m", "straightline_inference.adapter"]
CMD []

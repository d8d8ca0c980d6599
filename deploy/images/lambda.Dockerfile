# The serverless function: the model-server image plus the Lambda runtime interface client.
# On AWS Lambda the entrypoint is awslambdaric; locally the adapter runs the same image under
# AWS's Runtime Interface Emulator (at /usr/local/bin/aws-lambda-rie), overriding the
# entrypoint. Models are mounted read-only at /models (STRAIGHTLINE_MODEL_STORE).
ARG SERVER_IMAGE=straightline/model-server:dev
FROM ${SERVER_IMAGE}

USER root
RUN pip install --no-cache-dir -c constraints.txt "./services/inference[lambda]"
COPY build/aws-lambda-rie-x86_64 /usr/local/bin/aws-lambda-rie
ENV STRAIGHTLINE_MODEL_STORE=/models
USER 65534:65534
ENTRYPOINT ["python", "-m", "awslambdaric"]
CMD ["straightline_inference.lambda_handler.handler"]

#!/usr/bin/env bash
# Builds every image from the repository root: the platforms' (model-server, Lambda), the
# jobs' (trainer) and the services' (placer, devrunner, adapter; deploy/compose.yaml runs them).
#   BASE_IMAGE   base of the images (default: python:3.11-slim if it is present locally, else a
#                local Debian base made by build-base.sh; nothing is pulled from a registry)
#   TAG          image tag (default dev)
# Run after `make setup` (it needs the generated stubs and the venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${TAG:-dev}

base=${BASE_IMAGE:-}
if [ -z "$base" ]; then
  if docker image inspect python:3.11-slim >/dev/null 2>&1; then
    base=python:3.11-slim
  else
    base=straightline/base:bookworm
    deploy/images/build-base.sh "$base"
  fi
fi

mkdir -p build
.venv/bin/python -m straightline_inference.rie build/aws-lambda-rie-x86_64 >/dev/null

docker build --quiet --network host --build-arg "BASE_IMAGE=$base" \
  -f deploy/images/model-server.Dockerfile -t "straightline/model-server:$tag" . >/dev/null
echo "built straightline/model-server:$tag (base $base)"
docker build --quiet --network host --build-arg "SERVER_IMAGE=straightline/model-server:$tag" \
  -f deploy/images/lambda.Dockerfile -t "straightline/lambda:$tag" . >/dev/null
echo "built straightline/lambda:$tag"
docker build --quiet --network host --build-arg "SERVER_IMAGE=straightline/model-server:$tag" \
  -f deploy/images/trainer.Dockerfile -t "straightline/trainer:$tag" . >/dev/null
echo "built straightline/trainer:$tag"
for service in placer devrunner; do
  docker build --quiet --network host --build-arg "BASE_IMAGE=$base" \
    -f "deploy/images/$service.Dockerfile" -t "straightline/$service:$tag" . >/dev/null
  echo "built straightline/$service:$tag"
done
docker build --quiet --network host --build-arg "LAMBDA_IMAGE=straightline/lambda:$tag" \
  -f deploy/images/adapter.Dockerfile -t "straightline/adapter:$tag" . >/dev/null
echo "built straightline/adapter:$tag"

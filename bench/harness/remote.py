"""The remote-serverless testbed: the Lambda service emulator (bench/lambda_service) with the
model's answers precomputed for the image pool, and the serverless adapter's arguments for
calling it through its AWS path."""

import hashlib
import json
import os
from contextlib import ExitStack
from pathlib import Path

from scripts import localstack

FUNCTION = "straightline"
# boto3 signs every call; the emulator checks no signature. Loopback only: the endpoint URL
# is always the emulator's, so nothing reaches AWS.
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "emulator",
    "AWS_SECRET_ACCESS_KEY": "emulator",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def precompute_answers(store, model: str, pool: list) -> dict[str, dict]:
    """What the model answers for each image of the pool, keyed by the image's SHA-256, as
    the Lambda handler returns it (every class, best first)."""
    from straightline_inference.model import LoadedModel

    loaded = LoadedModel(store.resolve(model))
    answers = {}
    for _name, data, content_type in pool:
        key = hashlib.sha256(data).hexdigest()
        if key not in answers:
            prediction = loaded.predict(data, content_type)
            answers[key] = {
                "model": {"name": prediction.name, "version": prediction.version},
                "classes": [vars(c) for c in prediction.classes],
            }
    return answers


def start_lambda(
    stack: ExitStack, store, model: str, workdir: Path, pool: list, concurrency: int
) -> list[str]:
    """Starts the emulator (stopped with the stack); returns the serverless adapter's
    arguments."""
    answers = workdir / "lambda-answers.json"
    answers.write_text(json.dumps(precompute_answers(store, model, pool)))
    service = localstack.start_service(
        stack,
        "bench.lambda_service",
        [
            *("--function", FUNCTION, "--model", model, "--answers", str(answers)),
            *("--concurrency", str(concurrency)),
        ],
        workdir / "lambda-service",
    )
    saved = {name: os.environ.get(name) for name in _CREDENTIALS}
    os.environ.update(_CREDENTIALS)  # inherited by the adapters started next
    stack.callback(_restore, saved)
    return [
        *("--function-name", FUNCTION, "--concurrency", str(concurrency)),
        *("--endpoint-url", f"http://127.0.0.1:{service.ports['http']}"),
    ]


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

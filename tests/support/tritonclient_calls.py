"""Calls a placer's Open Inference Protocol front door with Triton's own client, in a process
of its own (as a user's would be: tritonclient's generated stubs and StraightLine's vendored
ones define the same `inference` package, so they cannot share one process), and prints what
it got as JSON.

    python -m tests.support.tritonclient_calls ADDRESS TOKEN COMMAND [FILE...]
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def health(client, headers, _files):
    return {
        "live": client.is_server_live(headers=headers),
        "ready": client.is_server_ready(headers=headers),
        "tiny_ready": client.is_model_ready("tiny", headers=headers),
        "absent_ready": client.is_model_ready("absent", headers=headers),
        "metadata": client.get_model_metadata("tiny", headers=headers, as_json=True),
    }


def infer_images(client, headers, files):
    images = triton.InferInput("image", [len(files)], "BYTES")
    images.set_data_from_numpy(np.array([Path(f).read_bytes() for f in files], dtype=np.object_))
    result = client.infer(
        "tiny", [images], outputs=[triton.InferRequestedOutput("scores")], headers=headers
    )
    parameters = result.get_response().parameters
    return {
        "scores": result.as_numpy("scores").tolist(),
        "served_platform": parameters["straightline.served_platform"].string_param,
    }


def infer_pixels_top_2(client, headers, _files):
    pixels = np.full((1, 32, 32, 3), (200, 40, 40), dtype=np.uint8)
    raw = triton.InferInput("image", list(pixels.shape), "UINT8")
    raw.set_data_from_numpy(pixels)
    top_two = triton.InferRequestedOutput("scores", class_count=2)
    result = client.infer("tiny", [raw], outputs=[top_two], headers=headers)
    return {"labels": [entry.decode() for entry in result.as_numpy("scores")[0]]}


def errors(client, headers, _files):
    def status_of(call) -> list[str]:
        try:
            call()
        except InferenceServerException as error:
            return [error.status(), error.message()]
        return ["OK", ""]

    images = triton.InferInput("image", [1], "BYTES")
    images.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    return {
        "not_an_image": status_of(lambda: client.infer("tiny", [images], headers=headers)),
        "absent_model": status_of(lambda: client.get_model_metadata("absent", headers=headers)),
        "anonymous": status_of(client.is_server_live),
    }


COMMANDS = {f.__name__: f for f in (health, infer_images, infer_pixels_top_2, errors)}

if __name__ == "__main__":
    address, token, command, *files = sys.argv[1:]
    client = triton.InferenceServerClient(url=address)
    try:
        print(json.dumps(COMMANDS[command](client, {"authorization": f"Bearer {token}"}, files)))
    finally:
        client.close()

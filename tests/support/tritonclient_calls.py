"""Calls StraightLine with Triton's own clients, in a process of its own (as a user's would be:
tritonclient's generated stubs and StraightLine's vendored ones define the same `inference`
package, so they cannot share one process), and prints what it got as JSON: the Open Inference
Protocol over gRPC (the placer's front door, a model server's --grpc-listen) with
tritonclient.grpc (a client token), a model server's v2 REST API with tritonclient.http
(commands http_*; no token).

    python -m tests.support.tritonclient_calls ADDRESS TOKEN COMMAND [FILE...]
"""

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton
import tritonclient.http as triton_http
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
    parameters = result.get_response().parameters  # the placer's; a model server sets none
    served = parameters.get("straightline.served_platform")
    return {
        "scores": result.as_numpy("scores").tolist(),
        "served_platform": served.string_param if served else "",
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


def http_health(client, _headers, _files):
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "tiny_ready": client.is_model_ready("tiny"),
        "absent_ready": client.is_model_ready("absent"),
        "metadata": client.get_model_metadata("tiny"),
    }


def http_infer_images(client, _headers, files):
    images = triton_http.InferInput("image", [len(files)], "BYTES")
    images.set_data_from_numpy(
        np.array([Path(f).read_bytes() for f in files], dtype=np.object_), binary_data=True
    )
    scores = triton_http.InferRequestedOutput("scores", binary_data=True)
    result = client.infer("tiny", [images], outputs=[scores])
    return {"scores": result.as_numpy("scores").tolist()}


def http_infer_fp32_top_2(client, _headers, _files):
    pixels = np.full((1, 32, 32, 3), (200.0, 40.0, 40.0), dtype=np.float32)
    raw = triton_http.InferInput("image", list(pixels.shape), "FP32")
    raw.set_data_from_numpy(pixels, binary_data=False)  # JSON numbers this time
    top_two = triton_http.InferRequestedOutput("scores", binary_data=False, class_count=2)
    result = client.infer("tiny", [raw], outputs=[top_two])
    return {"labels": [str(entry) for entry in result.as_numpy("scores")[0]]}  # JSON: text


def http_errors(client, _headers, _files):
    images = triton_http.InferInput("image", [1], "BYTES")
    images.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    try:
        client.infer("tiny", [images])
    except InferenceServerException as error:
        return {"not_an_image": [error.status(), error.message()]}
    return {"not_an_image": ["OK", ""]}


COMMANDS = {
    f.__name__: f
    for f in (
        health,
        infer_images,
        infer_pixels_top_2,
        errors,
        http_health,
        http_infer_images,
        http_infer_fp32_top_2,
        http_errors,
    )
}

if __name__ == "__main__":
    address, token, command, *files = sys.argv[1:]
    http = command.startswith("http_")
    client = (triton_http if http else triton).InferenceServerClient(url=address)
    try:
        print(json.dumps(COMMANDS[command](client, {"authorization": f"Bearer {token}"}, files)))
    finally:
        client.close()

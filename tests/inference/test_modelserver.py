"""The model server's REST API with a real Keras model, served by waitress."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from straightline_common.modelstore import ModelStore
from straightline_common.processes import ServiceProcess
from straightline_common.s3models import S3Models
from straightline_inference.adapter.backend import PredictCall
from straightline_inference.adapter.modelserver_client import ModelServerClient
from straightline_inference.batching import BatchCeiling
from tests.support.models import CLASSES, image_bytes, make_classifier, png_header
from tests.support.s3 import BUCKET

pytestmark = pytest.mark.tensorflow


def call(server, path, data=None, content_type="image/jpeg", headers=None):
    url = f"http://127.0.0.1:{server.ports['http']}{path}"
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": content_type, **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_predicts_top_k_classes_of_a_jpeg_and_a_png(model_server):
    status, answer = call(model_server, "/v1/models/tiny/predict?top_k=2", image_bytes())
    assert status == 200
    assert answer["model"] == {"name": "tiny", "version": "1"}
    assert len(answer["classes"]) == 2
    assert {c["label"] for c in answer["classes"]} <= set(CLASSES)
    assert answer["classes"][0]["score"] >= answer["classes"][1]["score"]
    status, png = call(
        model_server, "/v1/models/tiny/versions/1/predict", image_bytes(fmt="PNG"), "image/png"
    )
    assert status == 200 and len(png["classes"]) == len(CLASSES)
    assert sum(c["score"] for c in png["classes"]) == pytest.approx(1.0, abs=1e-4)
    assert png["timings"]["inference_ms"] > 0
    assert 0 <= png["timings"]["queue_ms"] <= png["timings"]["inference_ms"]  # batch's wait


@pytest.mark.parametrize(
    "ceiling", [BatchCeiling(1, 0.0), BatchCeiling(max_batch_size=4), BatchCeiling(0, 0.0025)]
)
def test_the_adapters_client_passes_batching_ceilings_the_server_takes(model_server, ceiling):
    client = ModelServerClient(f"http://127.0.0.1:{model_server.ports['http']}", connections=1)
    try:
        call = PredictCall("r-1", "tiny", "", image_bytes(), "image/jpeg", 1, batching=ceiling)
        assert len(client.predict(call, timeout=30).classes) == 1
    finally:
        client.close()


def test_the_same_image_gets_the_same_answer(model_server):
    image = image_bytes((10, 200, 90))
    answers = [call(model_server, "/v1/models/tiny/predict", image)[1]["classes"] for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize("path", ["/v1/models/%2E%2E/versions/1", "/v1/models/%2E%2E"])
def test_metadata_of_a_name_outside_the_store_is_refused(model_server, path):
    status, answer = call(model_server, path)
    assert (status, answer["error"]["code"]) == (400, "INVALID_ARGUMENT")


def test_metadata_and_health(model_server):
    assert call(model_server, "/healthz")[0] == 200
    assert call(model_server, "/v1/models") == (200, {"models": [{"name": "tiny", "version": "1"}]})
    status, metadata = call(model_server, "/v1/models/tiny")
    assert status == 200
    assert metadata["class_names"] == list(CLASSES)
    assert metadata["input_size"] == [32, 32]
    assert metadata["checksum"].startswith("sha256:")


@pytest.mark.parametrize(
    ("path", "data", "content_type", "status", "code", "message"),
    [
        (
            "/v1/models/tiny/predict",
            b"definitely not an image",
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "not a JPEG image",
        ),
        (
            "/v1/models/tiny/predict",
            image_bytes()[:300],
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "truncated or corrupt",
        ),
        (
            "/v1/models/tiny/predict",
            image_bytes(),
            "text/plain",
            400,
            "INVALID_ARGUMENT",
            "content type 'text/plain' is not supported",
        ),
        (
            "/v1/models/tiny/predict",
            image_bytes(fmt="PNG"),
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "not a JPEG image",
        ),
        ("/v1/models/tiny/predict", b"", "image/png", 400, "INVALID_ARGUMENT", "empty"),
        (
            "/v1/models/tiny/predict",
            b"x" * (16 * 1024 * 1024 + 1),
            "image/png",
            413,
            "INVALID_ARGUMENT",
            "over the limit",
        ),
        (
            "/v1/models/nope/predict",
            image_bytes(),
            "image/jpeg",
            404,
            "NOT_FOUND",
            "model nope is not served here",
        ),
        (
            "/v1/models/tiny/versions/7/predict",
            image_bytes(),
            "image/jpeg",
            404,
            "NOT_FOUND",
            "has no version '7'",
        ),
        (
            "/v1/models/%2E%2E/versions/1/predict",
            image_bytes(),
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "model name '..' is not valid",
        ),
        (
            "/v1/models/tiny/predict",
            png_header(7000, 7000),
            "image/png",
            400,
            "INVALID_ARGUMENT",
            "7000x7000 pixels, over the limit of 16,777,216 pixels for PNG images",
        ),
        (
            "/v1/models/tiny/predict",
            png_header(30000, 30000),  # past PIL's own bomb limit: refused while opening
            "image/png",
            400,
            "INVALID_ARGUMENT",
            "more pixels than the limit of 16,777,216",
        ),
        (
            "/v1/models/tiny/predict?top_k=lots",
            image_bytes(),
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "top_k must be an integer",
        ),
        (
            "/v1/models/tiny/predict?top_k=-1",
            image_bytes(),
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "top_k must be 0",
        ),
        (
            "/v1/models/tiny/predict?max_batch_size=many",
            image_bytes(),
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "max_batch_size must be an integer and max_queue_delay_ms a number",
        ),
        (
            "/v1/models/tiny/predict?max_batch_size=2&max_queue_delay_ms=nan",
            image_bytes(),
            "image/jpeg",
            400,
            "INVALID_ARGUMENT",
            "max_queue_delay must be between 0 and 1000 ms",
        ),
    ],
)
def test_bad_input_gets_a_4xx_with_a_clear_message(
    model_server, path, data, content_type, status, code, message
):
    got_status, answer = call(model_server, path, data, content_type)
    assert got_status == status
    assert answer["error"]["code"] == code
    assert message in answer["error"]["message"]
    assert call(model_server, "/v1/models/tiny/predict", image_bytes())[0] == 200


def test_serves_versions_that_arrive_after_it_started(tmp_path):
    store = ModelStore(tmp_path / "models")
    store.root.mkdir()
    server = ServiceProcess(
        "straightline_inference.modelserver",
        ["--store", str(store.root), "--listen", "127.0.0.1:0", "--threads", "1"],
        tmp_path,
    )
    try:
        server.wait_ready(60)
        assert call(server, "/v1/models") == (200, {"models": []})
        status, refused = call(server, "/v1/models/late/predict", image_bytes())
        assert status == 404 and "model late is not served here" in refused["error"]["message"]
        make_classifier(store, "late")
        status, answer = call(server, "/v1/models/late/predict", image_bytes())
        assert status == 200 and answer["model"] == {"name": "late", "version": "1"}
        make_classifier(store, "late", seed=1)
        status, answer = call(server, "/v1/models/late/versions/2/predict", image_bytes())
        assert status == 200 and answer["model"] == {"name": "late", "version": "2"}
        assert call(server, "/v1/models")[1]["models"] == [
            {"name": "late", "version": "1"},
            {"name": "late", "version": "2"},
        ]
    finally:
        server.terminate()


def test_serves_a_version_fetched_from_its_s3_location(tmp_path, model_store, s3_endpoint):
    s3_url = f"s3://{BUCKET}/modelserver"
    publisher = ModelStore(model_store.root, S3Models(s3_url, client=s3_endpoint.client()))
    publisher.publish(model_store.resolve("tiny"))
    server = ServiceProcess(
        "straightline_inference.modelserver",
        ["--store", str(tmp_path / "empty"), "--listen", "127.0.0.1:0", "--threads", "1"],
        tmp_path,
        env={**s3_endpoint.env(), "STRAIGHTLINE_MODEL_S3_URL": s3_url},
    )
    try:
        server.wait_ready(60)
        assert call(server, "/v1/models") == (200, {"models": [{"name": "tiny", "version": "1"}]})
        status, answer = call(server, "/v1/models/tiny/predict", image_bytes())
        assert status == 200 and answer["model"] == {"name": "tiny", "version": "1"}
        assert (tmp_path / "empty" / "tiny" / "1" / "model.h5").is_file()
    finally:
        server.terminate()


def test_a_bad_s3_location_stops_the_start_with_a_clear_message(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "straightline_inference.modelserver", "--store", str(tmp_path)],
        env={**os.environ, "STRAIGHTLINE_MODEL_S3_URL": "https://bucket/models"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "model_s3_url from environment variable STRAIGHTLINE_MODEL_S3_URL" in result.stderr
    assert "s3://BUCKET[/PREFIX]" in result.stderr

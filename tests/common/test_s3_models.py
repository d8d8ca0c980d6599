"""The model store with an S3 location, against a real S3 HTTP endpoint on loopback."""

import uuid

import pytest

from straightline_common.config import parse_s3_url
from straightline_common.errors import FailedPrecondition, NotFound, Unavailable
from straightline_common.modelstore import ModelStore, open_store
from straightline_common.s3models import S3Models
from tests.support.s3 import BUCKET


@pytest.fixture
def s3_url(s3_endpoint, monkeypatch):
    """A fresh prefix in the endpoint's bucket, with the AWS settings pointing at it."""
    for name, value in s3_endpoint.env().items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}/{uuid.uuid4().hex}"


def add_version(store: ModelStore, tmp_path, name: str, content: bytes):
    model_file = tmp_path / f"{uuid.uuid4().hex}.h5"
    model_file.write_bytes(content)
    return store.add(name, model_file, {"class_names": ["a", "b"], "input_size": [8, 8]})


def test_a_published_version_is_listed_and_fetched_by_another_store(tmp_path, s3_url):
    publisher = open_store(tmp_path / "devrunner", s3_url)
    version = add_version(publisher, tmp_path, "m", b"weights one")
    assert publisher.publish(version) == f"{s3_url}/m/1/"

    server = open_store(tmp_path / "server", s3_url)
    assert (server.names(), server.versions("m")) == (["m"], ["1"])
    fetched = server.resolve("m")
    assert fetched.directory == tmp_path / "server" / "m" / "1"
    assert fetched.model_path.read_bytes() == b"weights one"
    assert fetched.metadata["checksum"] == version.metadata["checksum"]


def test_latest_is_the_highest_version_of_disk_and_remote(tmp_path, s3_url):
    publisher = open_store(tmp_path / "devrunner", s3_url)
    for content in (b"v1", b"v2"):
        publisher.publish(add_version(publisher, tmp_path, "m", content))
    server = open_store(tmp_path / "server", s3_url)
    server.resolve("m", "1")  # now on disk, and v2 only remote

    assert server.versions("m") == ["1", "2"]
    assert server.resolve("m").model_path.read_bytes() == b"v2"
    assert [v.version for v in server.latest()] == ["2"]


def test_next_version_counts_the_remote_versions(tmp_path, s3_url):
    publisher = open_store(tmp_path / "devrunner", s3_url)
    publisher.publish(add_version(publisher, tmp_path, "m", b"v1"))
    assert open_store(tmp_path / "other", s3_url).next_version("m") == "2"


def test_a_version_without_metadata_is_incomplete_and_not_listed(tmp_path, s3_url, s3_endpoint):
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    s3_endpoint.client().put_object(Bucket=bucket, Key=f"{prefix}/m/1/model.h5", Body=b"half")
    store = open_store(tmp_path / "server", s3_url)
    assert (store.names(), store.versions("m"), store.latest()) == ([], [], [])
    with pytest.raises(NotFound, match="not in the model store"):
        store.resolve("m")


def test_a_corrupted_remote_file_is_refused_and_nothing_is_kept(tmp_path, s3_url, s3_endpoint):
    publisher = open_store(tmp_path / "devrunner", s3_url)
    publisher.publish(add_version(publisher, tmp_path, "m", b"good weights"))
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    s3_endpoint.client().put_object(Bucket=bucket, Key=f"{prefix}/m/1/model.h5", Body=b"evil")

    server = open_store(tmp_path / "server", s3_url)
    with pytest.raises(FailedPrecondition, match="does not match the checksum"):
        server.resolve("m")
    assert list((tmp_path / "server" / "m").iterdir()) == []


def test_a_missing_bucket_is_not_found_with_its_name(tmp_path, s3_url):
    store = open_store(tmp_path / "server", "s3://no-such-bucket/models")
    with pytest.raises(NotFound, match="s3://no-such-bucket/models/ has no such"):
        store.versions("m")


def test_an_unreachable_endpoint_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(Unavailable, match="cannot be reached"):
        open_store(tmp_path, f"s3://{BUCKET}/x").names()


def test_publishing_needs_a_remote(tmp_path):
    store = ModelStore(tmp_path)
    version = add_version(store, tmp_path, "m", b"w")
    with pytest.raises(FailedPrecondition, match="no remote"):
        store.publish(version)


@pytest.mark.parametrize("url", ["http://bucket/x", "s3://", "s3:///prefix", "s3://b/p?x=1"])
def test_s3_locations_are_validated(url):
    with pytest.raises(ValueError, match=r"s3://BUCKET\[/PREFIX\]"):
        parse_s3_url(url)
    with pytest.raises(ValueError):
        S3Models(url, client=object())


def test_a_prefix_is_optional():
    models = S3Models("s3://bucket", client=object())
    assert (models.bucket, models.prefix, models.uri("m", "3")) == (
        "bucket",
        "",
        "s3://bucket/m/3/",
    )


def test_a_fetch_that_another_process_finished_first_keeps_its_copy(tmp_path, s3_url):
    publisher = open_store(tmp_path / "devrunner", s3_url)
    publisher.publish(add_version(publisher, tmp_path, "m", b"weights"))
    server = open_store(tmp_path / "server", s3_url)
    first = server.resolve("m")  # as another process would have fetched it

    assert server.remote.fetch("m", "1", server.root) == first.directory
    assert [p.name for p in (tmp_path / "server" / "m").iterdir()] == ["1"]
    assert first.model_path.read_bytes() == b"weights"

"""The adapter's configuration is validated at start, with a sentence naming what to fix."""

import os

import pytest

from straightline_common.config import ConfigError
from straightline_inference.adapter import config


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "grpc://127.0.0.1:8001", "grpcs://a:1"])
def test_an_oip_endpoint_is_reached_over_rest_or_grpc(tmp_path, url):
    loaded = config.load(
        ["--platform", "oip", "--store", str(tmp_path), "--oip-url", url, "--oip-models", "m"],
        environ={},
    )
    assert loaded.oip_url == url


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--platform", "oip"], "platform oip needs oip_url and oip_models"),
        (
            ["--platform", "oip", "--oip-url", "ftp://host/x", "--oip-models", "m"],
            r"oip_url 'ftp://host/x' must start with one of http://, https://, grpc://, grpcs://",
        ),
        (["--platform", "docker", "--container-network", "bridge"], "must be host or container"),
        (["--platform", "serverless", "--min-warm", "9"], r"min_warm \(9\) is more than"),
        (["--platform", "flask", "--queue-limit", "5000"], r"queue_limit .* must be at most 1024"),
        (["--platform", "flask", "--queue-limit", "many"], r"queue_limit .*'many'"),
        (["--platform", "flask", "--latency-objective-ms", "0"], "latency_objective_ms must be"),
        (
            ["--threads", "2", "--model-server-processes", "3"],
            r"model_server_processes \(3\) is more than threads \(2\)",
        ),
        (["--model-server-processes", "65"], r"model_server_processes .* at most 64"),
        (["--model-server-processes", "0"], r"model_server_processes"),
        (
            ["--model-server-processes", "2", "--model-server-url", "http://127.0.0.1:1"],
            "with model_server_url it runs none",
        ),
    ],
)
def test_bad_adapter_configuration_is_refused_at_start(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        config.load([*argv, "--store", str(tmp_path)], environ={})


def test_the_queue_is_sized_to_the_objective_unless_a_number_is_given(tmp_path):
    store = ["--platform", "flask", "--store", str(tmp_path)]
    assert config.load(store, environ={}).queue_limit is None  # auto
    assert config.load([*store, "--queue-limit", "0"], environ={}).queue_limit == 0
    from_env = config.load(store, environ={"STRAIGHTLINE_ADAPTER_QUEUE_LIMIT": "auto"})
    assert from_env.queue_limit is None and from_env.latency_objective_ms == 300


def test_auto_model_server_processes_are_one_per_core_and_at_most_one_per_thread(tmp_path):
    flask = ["--platform", "flask", "--store", str(tmp_path)]
    cores = len(os.sched_getaffinity(0))
    assert config.load(flask, environ={}).model_server_processes == 1
    auto = [*flask, "--model-server-processes", "auto"]
    assert config.load([*auto, "--threads", "64"], environ={}).model_server_processes == cores
    assert config.load([*auto, "--threads", "1"], environ={}).model_server_processes == 1
    elsewhere = [*auto, "--model-server-url", "http://127.0.0.1:1"]
    assert config.load(elsewhere, environ={}).model_server_processes == 1

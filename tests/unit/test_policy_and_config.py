import pytest

from straightline_common.config import ConfigError
from straightline_common.errors import InvalidArgument
from straightline_placer import config
from straightline_placer.algorithm import Platform, Rule
from straightline_placer.policy import SERVERLESS_PAYLOAD_LIMIT_BYTES, Policy


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"frequency_threshold_rps": 0}, "frequency_threshold_rps must be a positive"),
        ({"frequency_threshold_rps": -3}, "frequency_threshold_rps must be a positive"),
        ({"frequency_threshold_rps": float("nan")}, "frequency_threshold_rps must be a positive"),
        ({"data_size_threshold_bytes": 0}, "data_size_threshold_bytes must be above 0"),
        ({"data_size_threshold_bytes": SERVERLESS_PAYLOAD_LIMIT_BYTES}, "serverless payload"),
        ({"frequency_window_s": 0}, "frequency_window must be between"),
        ({"heartbeat_timeout_s": -1}, "heartbeat_timeout must be between"),
        ({"heartbeat_timeout_s": 1e9}, "heartbeat_timeout must be between"),
        ({"colour": "blue"}, "unknown policy field"),
    ],
)
def test_invalid_policies_are_refused_with_a_sentence(changes, message):
    with pytest.raises(InvalidArgument, match=message):
        Policy().with_changes(**changes)


def test_valid_change_keeps_the_other_fields():
    policy = Policy().with_changes(data_size_threshold_bytes=SERVERLESS_PAYLOAD_LIMIT_BYTES - 1)
    assert policy.data_size_threshold_bytes == SERVERLESS_PAYLOAD_LIMIT_BYTES - 1
    assert policy.frequency_threshold_rps == Policy().frequency_threshold_rps


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path):
    config_file = tmp_path / "placer.toml"
    config_file.write_text(
        "[server]\nlisten = '127.0.0.1:7000'\n"
        "[policy]\nfrequency_threshold_rps = 3\ndata_size_threshold_bytes = 500\n"
        "heartbeat_timeout_s = 9\n"
    )
    environ = {
        "STRAIGHTLINE_PLACER_DATA_SIZE_THRESHOLD_BYTES": "600",
        "STRAIGHTLINE_PLACER_HEARTBEAT_TIMEOUT_S": "8",
        "STRAIGHTLINE_PLACER_PINNED_PLATFORM": "docker",
        "STRAIGHTLINE_PLACER_PLACEMENT_RULE": "capacity-aware",
    }
    loaded = config.load(
        ["--config", str(config_file), "--heartbeat-timeout-s", "7"], environ=environ
    )
    assert loaded.listen == "127.0.0.1:7000"
    assert loaded.policy.frequency_threshold_rps == 3.0
    assert loaded.policy.data_size_threshold_bytes == 600
    assert loaded.policy.heartbeat_timeout_s == 7.0
    assert loaded.policy.pinned_platform is Platform.DOCKER
    assert loaded.policy.placement_rule is Rule.CAPACITY_AWARE
    assert config.load([], environ={}).policy.placement_rule is Rule.PAPER
    assert loaded.policy.frequency_window_s == Policy().frequency_window_s


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--listen", "nowhere"], {}, "listen from flag --listen is invalid"),
        ([], {"STRAIGHTLINE_PLACER_FREQUENCY_THRESHOLD_RPS": "fast"}, "environment variable"),
        (["--data-size-threshold-bytes", "7000000"], {}, "invalid policy: .*6 MB"),
        (["--pinned-platform", "mainframe"], {}, "expected none, flask, docker or serverless"),
        (["--placement-rule", "clever"], {}, "expected paper, capacity-aware or latency-aware"),
        (["--metrics-listen", "9464"], {}, "metrics_listen is invalid"),
        (["--max-concurrent-rpcs", "-1"], {}, "max_concurrent_rpcs .* must be zero or more"),
        (["--config", "/nonexistent/placer.toml"], {}, "cannot read config file"),
    ],
)
def test_bad_configuration_is_refused_at_start(argv, environ, message):
    with pytest.raises(ConfigError, match=message):
        config.load(argv, environ=environ)

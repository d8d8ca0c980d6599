import pytest

from straightline_common.config import ConfigError
from straightline_common.errors import InvalidArgument
from straightline_placer import config
from straightline_placer.algorithm import Platform, Rule
from straightline_placer.policy import SERVERLESS_PAYLOAD_LIMIT_BYTES, PlatformSettings, Policy


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
        ({"placement_rule": 99}, "placement_rule 99 is not a rule this placer has"),
        ({"default_latency_objective_s": 0}, "default_latency_objective must be between"),
        ({"slo_attainment_target": 1.5}, "slo_attainment_target must be a share between 0.5"),
        ({"slo_attainment_target": float("nan")}, "slo_attainment_target must be a share"),
        ({"latency_objectives": {"m": 7200.0}}, "a latency objective must be between"),
        ({"latency_objectives": {"": 0.2}}, "a model name must have 1 to 256"),
        (
            {"latency_objectives": {f"m{i}": 0.2 for i in range(1001)}},
            "latency_objectives holds at most 1000 models, not 1001",
        ),
        (
            {"platform_settings": {Platform.SERVERLESS: PlatformSettings(memory_mb=64)}},
            "platform_settings of serverless: memory_mb must be between 128 and 10240",
        ),
        (
            {"platform_settings": {Platform.FLASK: PlatformSettings(price_per_request=-1)}},
            "platform_settings of flask: price_per_request must be zero or more",
        ),
        (
            {"platform_settings": {Platform.DOCKER: PlatformSettings(bandwidth_bytes_per_s=0)}},
            "bandwidth_bytes_per_second must be positive",
        ),
        (
            {"preference_order": (Platform.FLASK, Platform.FLASK)},
            "preference_order must list each platform at most once",
        ),
    ],
)
def test_invalid_policies_are_refused_with_a_sentence(changes, message):
    with pytest.raises(InvalidArgument, match=message):
        Policy().with_changes(**changes)


def test_platform_settings_change_only_the_platforms_given():
    cheap = PlatformSettings(price_per_gb_second=0.00001, memory_mb=1024)
    policy = Policy().with_changes(platform_settings={Platform.SERVERLESS: cheap})
    assert policy.platform_settings[Platform.SERVERLESS] == cheap
    assert policy.platform_settings[Platform.FLASK] == Policy().platform_settings[Platform.FLASK]


def test_a_model_without_its_own_objective_has_the_default():
    policy = Policy(latency_objectives={"xception": 1.5}, default_latency_objective_s=0.2)
    assert policy.latency_objective_s("xception") == 1.5
    assert policy.latency_objective_s("small") == 0.2


def test_the_config_file_sets_objectives_and_platform_settings(tmp_path):
    config_file = tmp_path / "placer.toml"
    config_file.write_text(
        "[policy]\nplacement_rule = 'slo-aware'\ndefault_latency_objective_s = 0.25\n"
        "[policy.latency_objectives]\nxception = 1.2\n"
        "[policy.platforms.serverless]\nmemory_mb = 4096\nnetwork_round_trip_s = 0.02\n"
        "[policy.platforms.flask]\nhost = 'edge-1'\nhost_cores = 2\n"
        "[policy.platforms.docker]\nhost = 'edge-1'\nhost_cores = 2\nmax_batch_size = 4\n"
        "max_queue_delay_s = 0.005\n"
    )
    policy = config.load(["--config", str(config_file)], environ={}).policy
    assert policy.placement_rule is Rule.SLO_AWARE
    assert (policy.default_latency_objective_s, dict(policy.latency_objectives)) == (
        0.25,
        {"xception": 1.2},
    )
    serverless = policy.platform_settings[Platform.SERVERLESS]
    assert (serverless.memory_mb, serverless.network_round_trip_s) == (4096, 0.02)
    shared = [policy.platform_settings[p] for p in (Platform.FLASK, Platform.DOCKER)]
    assert [(s.host, s.host_cores) for s in shared] == [("edge-1", 2)] * 2
    assert [(s.max_batch_size, s.max_queue_delay_s) for s in shared] == [(0, None), (4, 0.005)]
    assert (
        serverless.price_per_request
        == Policy().platform_settings[Platform.SERVERLESS].price_per_request
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[policy.platforms.gpu]\nmemory_mb = 1\n", "policy.platforms.gpu.*not a platform"),
        ("[policy.platforms.flask]\ncolour = 1\n", "takes only: bandwidth_bytes_per_s"),
        ("[policy.latency_objectives]\nm = 'fast'\n", "must map model names to seconds"),
        ("[policy.platforms.docker]\nmemory_mb = 1\n", "memory_mb must be between 128"),
    ],
)
def test_bad_slo_tables_are_refused_at_start(tmp_path, toml, message):
    config_file = tmp_path / "placer.toml"
    config_file.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        config.load(["--config", str(config_file)], environ={})


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
        (
            ["--placement-rule", "clever"],
            {},
            "expected paper, capacity-aware, latency-aware or slo-aware",
        ),
        (["--metrics-listen", "9464"], {}, "metrics_listen .*invalid .*127.0.0.1:9464, or off"),
        (["--max-concurrent-rpcs", "0"], {}, "max_concurrent_rpcs .* must be a positive integer"),
        (["--config", "/nonexistent/placer.toml"], {}, "cannot read config file"),
    ],
)
def test_bad_configuration_is_refused_at_start(argv, environ, message):
    with pytest.raises(ConfigError, match=message):
        config.load(argv, environ=environ)

"""The placer's configuration: flags, STRAIGHTLINE_PLACER_* variables, a TOML file."""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from straightline_common.auth import TOKENS_FILE_SETTING
from straightline_common.config import (
    ConfigError,
    Setting,
    parse_address,
    parse_bool,
    parse_positive_int,
    read_settings,
    read_toml,
)
from straightline_common.errors import InvalidArgument
from straightline_common.metrics import metrics_listen_setting
from straightline_common.tls import TLS_SETTINGS, tls_files
from straightline_placer.algorithm import Platform, Rule
from straightline_placer.policy import PlatformSettings, Policy

_DEFAULT_POLICY = Policy()


def _platform_or_none(text: str) -> Platform | None:
    if text.strip().lower() in ("", "none"):
        return None
    try:
        return Platform[text.strip().upper()]
    except KeyError:
        raise ValueError("expected none, flask, docker or serverless") from None


def _rule(text: str) -> Rule:
    try:
        return Rule[text.strip().upper().replace("-", "_")]
    except KeyError:
        raise ValueError("expected paper, capacity-aware, latency-aware or slo-aware") from None


SERVER_SETTINGS = (
    Setting(
        "listen",
        "STRAIGHTLINE_PLACER_LISTEN",
        parse_address,
        "127.0.0.1:50051",
        "gRPC address to serve on",
    ),
    metrics_listen_setting("STRAIGHTLINE_PLACER_METRICS_LISTEN", "127.0.0.1:9464"),
    Setting(
        "max_workers",
        "STRAIGHTLINE_PLACER_MAX_WORKERS",
        parse_positive_int,
        64,
        "gRPC worker threads for the unary calls that are not inference (Infer and ModelInfer "
        "hold none: they are coroutines); streams have their own, max_streams",
    ),
    Setting(
        "max_concurrent_rpcs",
        "STRAIGHTLINE_PLACER_MAX_CONCURRENT_RPCS",
        parse_positive_int,
        1024,
        "unary RPCs at once, inference among them, beyond which one is refused with "
        "RESOURCE_EXHAUSTED",
    ),
    Setting(
        "max_streams",
        "STRAIGHTLINE_PLACER_MAX_STREAMS",
        parse_positive_int,
        256,
        "heartbeat and watch streams open at once (each holds a thread of its own); "
        "one more is refused with RESOURCE_EXHAUSTED",
    ),
    Setting(
        "max_streams_per_peer",
        "STRAIGHTLINE_PLACER_MAX_STREAMS_PER_PEER",
        parse_positive_int,
        32,
        "of those, how many one host may hold",
    ),
    Setting(
        "forward_timeout_s",
        "STRAIGHTLINE_PLACER_FORWARD_TIMEOUT_S",
        float,
        60.0,
        "deadline of a forwarded request when the caller sets none",
    ),
    Setting(
        "policy_file",
        "STRAIGHTLINE_PLACER_POLICY_FILE",
        str,
        "",
        "keep the policy as changed at run time (UpdatePolicy) in this file and start from it; "
        "empty: changes last until the placer stops",
    ),
    Setting(
        "port_file",
        "STRAIGHTLINE_PLACER_PORT_FILE",
        str,
        "",
        "write the bound ports here as JSON once serving",
    ),
    TOKENS_FILE_SETTING,
    *TLS_SETTINGS,
    Setting("log_level", "STRAIGHTLINE_LOG_LEVEL", str, "info", "debug, info, warning or error"),
)
POLICY_SETTINGS = (
    Setting(
        "frequency_threshold_rps",
        "STRAIGHTLINE_PLACER_FREQUENCY_THRESHOLD_RPS",
        float,
        _DEFAULT_POLICY.frequency_threshold_rps,
        "F, requests per second per model",
    ),
    Setting(
        "data_size_threshold_bytes",
        "STRAIGHTLINE_PLACER_DATA_SIZE_THRESHOLD_BYTES",
        int,
        _DEFAULT_POLICY.data_size_threshold_bytes,
        "D, bytes",
    ),
    Setting(
        "frequency_window_s",
        "STRAIGHTLINE_PLACER_FREQUENCY_WINDOW_S",
        float,
        _DEFAULT_POLICY.frequency_window_s,
        "sliding window of f_t, seconds",
    ),
    Setting(
        "heartbeat_timeout_s",
        "STRAIGHTLINE_PLACER_HEARTBEAT_TIMEOUT_S",
        float,
        _DEFAULT_POLICY.heartbeat_timeout_s,
        "an instance silent this long leaves the view",
    ),
    Setting(
        "pinned_platform",
        "STRAIGHTLINE_PLACER_PINNED_PLATFORM",
        _platform_or_none,
        None,
        "none (Algorithm 1) or a platform every request goes to",
    ),
    Setting(
        "fallback_enabled",
        "STRAIGHTLINE_PLACER_FALLBACK",
        parse_bool,
        _DEFAULT_POLICY.fallback_enabled,
        "fall back to another platform on refusal",
    ),
    Setting(
        "keep_batches_together",
        "STRAIGHTLINE_PLACER_KEEP_BATCHES_TOGETHER",
        parse_bool,
        _DEFAULT_POLICY.keep_batches_together,
        "place the images of one OIP request once, together (false: each on its own)",
    ),
    Setting(
        "placement_rule",
        "STRAIGHTLINE_PLACER_PLACEMENT_RULE",
        _rule,
        _DEFAULT_POLICY.placement_rule,
        "paper (Algorithm 1 as written), capacity-aware (serverless capacity in view), "
        "latency-aware (capacity-aware, hot small requests to the fastest free platform) or "
        "slo-aware (the cheapest platform predicted to meet the latency objective)",
    ),
    Setting(
        "slo_attainment_target",
        "STRAIGHTLINE_PLACER_SLO_ATTAINMENT_TARGET",
        float,
        _DEFAULT_POLICY.slo_attainment_target,
        "the share of requests the SLO-aware rule aims to answer within the objective",
    ),
    Setting(
        "shed_late_requests",
        "STRAIGHTLINE_PLACER_SHED_LATE_REQUESTS",
        parse_bool,
        _DEFAULT_POLICY.shed_late_requests,
        "the SLO-aware rule refuses at once a request no platform is predicted to meet in time",
    ),
    Setting(
        "default_latency_objective_s",
        "STRAIGHTLINE_PLACER_DEFAULT_LATENCY_OBJECTIVE_S",
        float,
        _DEFAULT_POLICY.default_latency_objective_s,
        "the SLO-aware rule's latency objective of a model without its own, seconds "
        "(per model: the [policy.latency_objectives] table of the config file)",
    ),
)


@dataclass(frozen=True)
class PlacerConfig:
    listen: str
    metrics_listen: str
    max_workers: int
    max_concurrent_rpcs: int
    max_streams: int
    max_streams_per_peer: int
    forward_timeout_s: float
    policy_file: str
    port_file: str
    tokens_file: str
    tls_cert: str
    tls_key: str
    tls_client_ca: str
    log_level: str
    policy: Policy
    service_name = "straightline-placer"


def load(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> PlacerConfig:
    """Reads and validates the configuration; raises ConfigError with a clear message."""
    tables, config_path = read_settings(
        "straightline-placer",
        "Places inference requests on Flask, Docker or serverless by Algorithm 1.",
        {"server": SERVER_SETTINGS, "policy": POLICY_SETTINGS},
        "STRAIGHTLINE_PLACER_CONFIG",
        argv,
        environ,
    )
    server, policy_values = tables["server"], tables["policy"]
    tls_files(server)  # all three or none, and readable
    if server["forward_timeout_s"] <= 0:
        raise ConfigError("forward_timeout_s must be positive")
    policy_table = read_toml(config_path, "policy")
    policy_values["latency_objectives"] = _objectives(policy_table)
    policy_values["platform_settings"] = _platform_settings(policy_table)
    try:
        policy = Policy(**policy_values).validated()
    except InvalidArgument as error:
        raise ConfigError(f"invalid policy: {error}") from None
    return PlacerConfig(policy=policy, **server)


def _objectives(policy_table: dict[str, Any]) -> dict[str, float]:
    """[policy.latency_objectives]: model name = seconds."""
    table = policy_table.get("latency_objectives", {})
    if not isinstance(table, dict) or not all(isinstance(v, int | float) for v in table.values()):
        raise ConfigError("[policy.latency_objectives] must map model names to seconds")
    return {model: float(seconds) for model, seconds in table.items()}


def _platform_settings(policy_table: dict[str, Any]) -> dict[Platform, PlatformSettings]:
    """[policy.platforms.NAME] tables over the defaults: a platform's prices and network."""
    tables = policy_table.get("platforms", {})
    settings = dict(_DEFAULT_POLICY.platform_settings)
    known = {f.name for f in dataclasses.fields(PlatformSettings)}
    for name, table in tables.items() if isinstance(tables, dict) else ():
        try:
            platform = Platform[name.upper()]
        except KeyError:
            raise ConfigError(f"[policy.platforms.{name}]: not a platform") from None
        if not isinstance(table, dict) or set(table) - known:
            raise ConfigError(f"[policy.platforms.{name}] takes only: {', '.join(sorted(known))}")
        settings[platform] = dataclasses.replace(settings[platform], **table)
    return settings

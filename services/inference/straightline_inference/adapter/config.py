"""The adapter's configuration: flags, STRAIGHTLINE_ADAPTER_* variables, a TOML file."""

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from straightline_common.auth import TOKENS_FILE_SETTING
from straightline_common.config import (
    ConfigError,
    Setting,
    parse_address,
    parse_addresses,
    parse_bool,
    parse_non_negative_int,
    parse_positive_int,
    read_settings,
)
from straightline_common.metrics import metrics_listen_setting
from straightline_common.names import check_id
from straightline_common.tls import TLS_SETTINGS, tls_files
from straightline_inference.adapter.coalescer import MAX_BATCH_DELAY_S, MAX_BATCH_SIZE
from straightline_inference.adapter.queue_bound import MAX_LIMIT


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


OIP_SCHEMES = ("http", "https", "grpc", "grpcs")
MAX_MODEL_SERVER_PROCESSES = 64


def _auto_or(parse: Callable[[str], int], most: int) -> Callable[[str], int | None]:
    """A parser of "auto" (None) or a number parsed by `parse`, at most `most`."""

    def parse_auto(text: str) -> int | None:
        if text == "auto":
            return None
        value = parse(text)
        if value > most:
            raise ValueError(f"must be at most {most}")
        return value

    return parse_auto


def _setting(name: str, parse: Callable[[str], Any], default: Any, help_text: str) -> Setting:
    return Setting(name, f"STRAIGHTLINE_ADAPTER_{name.upper()}", parse, default, help_text)


SETTINGS = (
    _setting(
        "platform",
        _choice("flask", "docker", "serverless", "oip"),
        "flask",
        "the platform this adapter fronts (oip: an Open Inference Protocol endpoint elsewhere)",
    ),
    _setting("listen", parse_address, "127.0.0.1:50061", "gRPC address to serve on"),
    _setting("advertise", str, "", "host:port the placer should dial (default: the bound one)"),
    _setting(
        "placer",
        parse_addresses,
        "127.0.0.1:50051",
        "the placer's address, for heartbeats, or several (comma-separated: every placer of an "
        "active-active set); 'off' for none",
    ),
    _setting("instance_id", str, "", "unique id of this instance (default: platform-random)"),
    _setting(
        "name",
        str,
        "",
        "docker, serverless: a stable name for this adapter, the owner label of its containers; "
        "at start it removes the containers a predecessor of the same name left (default: the "
        "instance id, so nothing is removed)",
    ),
    _setting("store", str, "models", "model store directory"),
    _setting("threads", parse_positive_int, 4, "flask: model server worker threads (capacity)"),
    _setting(
        "model_server_processes",
        _auto_or(parse_positive_int, MAX_MODEL_SERVER_PROCESSES),
        1,
        "flask: model server processes sharing the threads, a model loaded in each: a number, "
        f"or auto (one per core, at most one per thread); at most {MAX_MODEL_SERVER_PROCESSES}",
    ),
    _setting("model_server_url", str, "", "flask: use this running model server instead"),
    _setting(
        "image",
        str,
        "",
        "docker: model-server image; serverless: Lambda image "
        "(defaults straightline/model-server:dev and straightline/lambda:dev)",
    ),
    _setting(
        "models_in_image",
        parse_bool,
        False,
        "docker, serverless: the image carries its models (a packaged version); do not "
        "mount the store into its containers",
    ),
    _setting(
        "store_volume",
        str,
        "",
        "docker, serverless: a named volume holding the store, mounted into the containers "
        "instead of the store's directory (when the adapter itself runs in a container)",
    ),
    _setting(
        "container_network",
        str,
        "host",
        "docker, serverless: the containers' network mode: host, or container:<name> of the "
        "adapter's own container",
    ),
    _setting("max_containers", parse_positive_int, 2, "docker: most model-server containers"),
    _setting(
        "docker_backend",
        _choice("host", "swarm"),
        "host",
        "docker: model servers as containers on this host's engine, or as the tasks of a Swarm "
        "service (the engine must be a swarm manager)",
    ),
    _setting(
        "swarm_base_port",
        parse_positive_int,
        20000,
        "docker on swarm: a task serves at this port plus its slot, on its node",
    ),
    _setting(
        "swarm_constraints",
        str,
        "",
        "docker on swarm: placement constraints of the model servers, comma-separated "
        "(e.g. node.labels.straightline.gpu==true)",
    ),
    _setting(
        "threads_per_container", parse_positive_int, 2, "docker: worker threads per container"
    ),
    _setting(
        "queue_limit",
        _auto_or(parse_non_negative_int, MAX_LIMIT),
        None,
        "flask, docker, oip: requests that may wait for a slot: auto (the default: what the "
        "slots drain within latency_objective_ms at their recent pace), or a number (0: refuse "
        f"when every slot is busy; at most {MAX_LIMIT})",
    ),
    _setting(
        "latency_objective_ms",
        float,
        300.0,
        "with queue_limit auto: the time within which a queued request should still be answered",
    ),
    _setting("idle_timeout_s", float, 60.0, "docker, serverless: stop environments idle this long"),
    _setting(
        "min_warm",
        parse_non_negative_int,
        0,
        "docker, serverless: environments started at once and kept warm (min replicas, "
        "provisioned concurrency)",
    ),
    _setting(
        "function_name", str, "", "serverless: an AWS Lambda function (default: local emulator)"
    ),
    _setting("endpoint_url", str, "", "serverless: Lambda API endpoint override"),
    _setting(
        "concurrency",
        parse_positive_int,
        4,
        "serverless: concurrent executions at most; oip: requests sent at once",
    ),
    _setting(
        "batch_size",
        parse_positive_int,
        1,
        "serverless: requests sent in one invocation at most (opt-in batching; 1: each on its "
        "own; it changes Lambda's billing and failures, docs/inference.md); docker: requests "
        "for one model sent to a container in one call while every slot is taken",
    ),
    _setting(
        "batch_delay_ms",
        float,
        5.0,
        "with batch_size over 1: how long the first request of a batch waits for more",
    ),
    _setting(
        "oip_url",
        str,
        "",
        "oip: the endpoint, REST (http://127.0.0.1:8000, https://...) or gRPC "
        "(grpc://127.0.0.1:8001, grpcs://...)",
    ),
    _setting(
        "oip_models",
        str,
        "",
        "oip: the models it serves, comma-separated NAME or NAME:VERSION (the protocol has no "
        "listing)",
    ),
    _setting(
        "runner",
        _choice("auto", "container", "process"),
        "auto",
        "serverless, local: environments as containers or processes",
    ),
    metrics_listen_setting("STRAIGHTLINE_ADAPTER_METRICS_LISTEN", "127.0.0.1:0"),
    _setting("port_file", str, "", "write the bound ports here as JSON once serving"),
    TOKENS_FILE_SETTING,
    *TLS_SETTINGS,
    Setting("log_level", "STRAIGHTLINE_LOG_LEVEL", str, "info", "log level"),
)


@dataclass(frozen=True)
class AdapterConfig:
    platform: str
    listen: str
    advertise: str
    placer: str
    instance_id: str
    name: str
    store: str
    threads: int
    model_server_processes: int  # "auto" resolved
    model_server_url: str
    image: str
    models_in_image: bool
    store_volume: str
    container_network: str
    max_containers: int
    docker_backend: str
    swarm_base_port: int
    swarm_constraints: str
    threads_per_container: int
    queue_limit: int | None  # None: auto
    latency_objective_ms: float
    idle_timeout_s: float
    min_warm: int
    function_name: str
    endpoint_url: str
    concurrency: int
    batch_size: int
    batch_delay_ms: float
    oip_url: str
    oip_models: str
    runner: str
    metrics_listen: str
    port_file: str
    tokens_file: str
    tls_cert: str
    tls_key: str
    tls_client_ca: str
    log_level: str

    @property
    def service_name(self) -> str:
        return f"straightline-adapter-{self.platform}"


def load(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> AdapterConfig:
    tables, _ = read_settings(
        "straightline-adapter",
        "Serves the v1 InferenceService in front of one platform and reports its capacity to "
        "the placer.",
        {"adapter": SETTINGS},
        "STRAIGHTLINE_ADAPTER_CONFIG",
        argv,
        environ,
    )
    settings = tables["adapter"]
    if not os.path.isdir(settings["store"]):
        raise ConfigError(f"store: {settings['store']} is not a directory")
    if settings["idle_timeout_s"] <= 0:
        raise ConfigError("idle_timeout_s must be positive")
    if not 1 <= settings["latency_objective_ms"] <= 3_600_000:
        raise ConfigError("latency_objective_ms must be between 1 and 3,600,000 (an hour)")
    tls_files(settings)  # all three or none, and readable
    settings["model_server_processes"] = _model_server_processes(settings)
    most = settings["max_containers" if settings["platform"] == "docker" else "concurrency"]
    if settings["min_warm"] > most:
        raise ConfigError(
            f"min_warm ({settings['min_warm']}) is more than the environments this adapter "
            f"may start ({most})"
        )
    if not 1 <= settings["batch_size"] <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    if not 0 <= settings["batch_delay_ms"] <= MAX_BATCH_DELAY_S * 1e3:
        raise ConfigError(f"batch_delay_ms must be between 0 and {MAX_BATCH_DELAY_S * 1e3:.0f}")
    if settings["platform"] == "oip" and not (settings["oip_url"] and settings["oip_models"]):
        raise ConfigError("platform oip needs oip_url and oip_models: the endpoint and its models")
    scheme = settings["oip_url"].partition("://")[0].lower()
    if settings["oip_url"] and scheme not in OIP_SCHEMES:
        raise ConfigError(
            f"oip_url {settings['oip_url']!r} must start with one of "
            f"{', '.join(s + '://' for s in OIP_SCHEMES)}"
        )
    if not 1024 <= settings["swarm_base_port"] <= 65535 - settings["max_containers"]:
        raise ConfigError(
            f"swarm_base_port must be between 1024 and {65535 - settings['max_containers']} "
            "(it plus a task's slot is the task's port)"
        )
    network = settings["container_network"]
    if network != "host" and not network.startswith("container:"):
        raise ConfigError(
            f"container_network must be host or container:<name>, not {network!r}: the "
            "adapter reaches its containers on its own loopback"
        )
    settings["instance_id"] = (
        settings["instance_id"] or f"{settings['platform']}-{uuid.uuid4().hex[:8]}"
    )
    if settings["name"]:
        check_id(settings["name"], "name")
    settings["name"] = settings["name"] or settings["instance_id"]
    if not settings["image"]:
        image = "lambda" if settings["platform"] == "serverless" else "model-server"
        settings["image"] = f"straightline/{image}:dev"
    return AdapterConfig(**settings)


def _model_server_processes(settings: dict[str, Any]) -> int:
    processes: int | None = settings["model_server_processes"]
    if processes is None:
        cores = len(os.sched_getaffinity(0))
        return 1 if settings["model_server_url"] else min(cores, settings["threads"])
    if processes > settings["threads"]:
        raise ConfigError(
            f"model_server_processes ({processes}) is more than threads ({settings['threads']}): "
            "each process needs at least one worker thread"
        )
    if processes > 1 and settings["model_server_url"]:
        raise ConfigError(
            "model_server_processes applies to the model servers this adapter starts; with "
            "model_server_url it runs none: leave model_server_processes at 1"
        )
    return processes

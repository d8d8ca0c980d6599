"""The devrunner's configuration: flags, STRAIGHTLINE_DEVRUNNER_* variables, a TOML file's
[devrunner] table."""

from collections.abc import Mapping
from dataclasses import dataclass

from straightline_common.auth import TOKENS_FILE_SETTING
from straightline_common.config import Setting, parse_address, read_settings
from straightline_common.metrics import metrics_listen_setting
from straightline_common.modelstore import s3_url_setting
from straightline_common.tls import TLS_SETTINGS, tls_files


def _runner(text: str) -> str:
    if text not in ("docker", "swarm", "local"):
        raise ValueError("expected docker, swarm or local")
    return text


SETTINGS = (
    Setting(
        "listen",
        "STRAIGHTLINE_DEVRUNNER_LISTEN",
        parse_address,
        "127.0.0.1:50071",
        "gRPC address to serve on",
    ),
    Setting("store", "STRAIGHTLINE_MODEL_STORE", str, "models", "model store directory"),
    Setting(
        "datasets",
        "STRAIGHTLINE_DEVRUNNER_DATASETS",
        str,
        "datasets",
        "directory under which jobs' datasets are named (a job's dataset_path is relative to it)",
    ),
    s3_url_setting("where package jobs also publish the model version"),
    Setting(
        "state", "STRAIGHTLINE_DEVRUNNER_STATE", str, "devrunner.sqlite", "SQLite file of the jobs"
    ),
    Setting(
        "runner",
        "STRAIGHTLINE_DEVRUNNER_RUNNER",
        _runner,
        "docker",
        "docker (jobs in containers), swarm (jobs as one-shot Swarm services) or local "
        "(processes, without an engine)",
    ),
    Setting(
        "swarm_constraints",
        "STRAIGHTLINE_DEVRUNNER_SWARM_CONSTRAINTS",
        str,
        "",
        "swarm runner: placement constraints of every job, comma-separated "
        "(e.g. node.labels.straightline.gpu==true)",
    ),
    TOKENS_FILE_SETTING,
    *TLS_SETTINGS,
    Setting(
        "store_volume",
        "STRAIGHTLINE_DEVRUNNER_STORE_VOLUME",
        str,
        "",
        "docker runner: a named volume holding the store, mounted into job containers "
        "instead of the store's directory (when the devrunner itself runs in a container)",
    ),
    Setting(
        "images",
        "STRAIGHTLINE_DEVRUNNER_IMAGES",
        str,
        "straightline/trainer:dev",
        "comma-separated allow-list of job images",
    ),
    metrics_listen_setting("STRAIGHTLINE_DEVRUNNER_METRICS_LISTEN", "127.0.0.1:0"),
    Setting(
        "port_file",
        "STRAIGHTLINE_DEVRUNNER_PORT_FILE",
        str,
        "",
        "write the bound ports here as JSON once serving",
    ),
    Setting("log_level", "STRAIGHTLINE_LOG_LEVEL", str, "info", "log level"),
)


@dataclass(frozen=True)
class DevRunnerConfig:
    listen: str
    store: str
    datasets: str
    model_s3_url: str
    state: str
    runner: str
    swarm_constraints: str
    tokens_file: str
    tls_cert: str
    tls_key: str
    tls_client_ca: str
    store_volume: str
    images: frozenset[str]
    metrics_listen: str
    port_file: str
    log_level: str
    service_name = "straightline-devrunner"


def load(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> DevRunnerConfig:
    """Reads and validates the configuration; raises ConfigError with a clear message."""
    tables, _ = read_settings(
        "straightline-devrunner",
        "Runs training, verification and packaging jobs in containers.",
        {"devrunner": SETTINGS},
        "STRAIGHTLINE_DEVRUNNER_CONFIG",
        argv,
        environ,
    )
    settings = tables["devrunner"]
    tls_files(settings)  # all three or none, and readable
    settings["images"] = frozenset(i.strip() for i in settings["images"].split(",") if i.strip())
    return DevRunnerConfig(**settings)

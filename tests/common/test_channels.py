"""Clients of several placers: the service config every language's client uses."""

import json
from pathlib import Path

from straightline_common import channels

ROOT = Path(__file__).resolve().parents[2]


def test_the_published_service_config_is_the_one_python_clients_use():
    published = json.loads((ROOT / "deploy" / "placers.service-config.json").read_text())
    assert published == json.loads(channels._SEVERAL_SERVERS_CONFIG)
    assert published["loadBalancingConfig"] == [{"round_robin": {}}]

"""The v1 contracts from another language: the Node.js client of examples/node-client
(@grpc/grpc-js, the .proto files loaded at run time) against the real placer, over every kind
of RPC the placer has: unary, server streaming and bidirectional streaming."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from straightline.v1 import placer_pb2, types_pb2
from straightline_inference.simulated import CLASS_NAMES, SimulatedAdapter
from tests.support.stack import wait_for_instances

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "examples" / "node-client" / "placer_client.js"
FLASK = types_pb2.PLATFORM_FLASK

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="needs Node.js and the npm packages (make setup)",
)


def node_command(placer, *args: str) -> list[str]:
    return ["node", str(CLIENT), "--placer", placer.address, *args]


def node(placer, *args: str) -> list[dict]:
    """Runs one command of the Node client; its JSON lines."""
    result = subprocess.run(node_command(placer, *args), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_policy_placement_and_inference_from_node(placer, stub, adapters, tmp_path):
    flask = adapters(FLASK)
    [policy] = node(placer, "policy")
    expected = stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy
    assert policy["frequency_threshold_rps"] == expected.frequency_threshold_rps
    assert int(policy["data_size_threshold_bytes"]) == expected.data_size_threshold_bytes

    [placement] = node(placer, "place", "--model", "demo", "--bytes", "1000")
    assert (placement["platform"], placement["branch"]) == (
        "PLATFORM_FLASK",
        "BRANCH_FLASK_AVAILABLE",
    )
    assert placement["instance_id"] == flask.instance_id
    assert int(placement["inputs"]["data_size_bytes"]) == 1000

    image = tmp_path / "picture.jpg"
    image.write_bytes(b"\xff\xd8" + b"\x00" * 999)  # the simulated adapter does not decode
    [answer] = node(placer, "infer", "--model", "demo", "--image", str(image))
    assert answer["served_platform"] == "PLATFORM_FLASK" and not answer["fell_back"]
    assert answer["classes"][0]["label"] == CLASS_NAMES[1001 % len(CLASS_NAMES)]


def test_an_adapter_in_node_registers_over_the_heartbeat_stream(placer, stub, adapters):
    # The placer checks that an advertised address serves the adapter's service: the Node
    # instance advertises a real (simulated, Flask) adapter's.
    flask = adapters(FLASK)
    registering = subprocess.Popen(
        node_command(
            placer,
            "register",
            "--instance-id",
            "node-docker-1",
            "--platform",
            "DOCKER",
            "--address",
            flask.address,
            "--capacity",
            "3",
            "--model",
            "demo",
            "--seconds",
            "3",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        view = wait_for_instances(stub, 2)
        assert {i.report.instance_id for i in view.instances} == {
            "node-docker-1",
            flask.instance_id,
        }
        [snapshot] = node(placer, "watch")
        assert "node-docker-1" in [i["report"]["instance_id"] for i in snapshot["instances"]]
        assert snapshot["docker_free_slots"] == 3
        [large] = node(placer, "place", "--model", "demo", "--bytes", str(10 * 1024 * 1024))
        assert (large["platform"], large["branch"], large["instance_id"]) == (
            "PLATFORM_DOCKER",
            "BRANCH_LARGE_DATA",
            "node-docker-1",
        )
        out, err = registering.communicate(timeout=30)
    finally:
        registering.kill()
        registering.wait()
    assert registering.returncode == 0, err
    acknowledged = json.loads(out)["acknowledged"]
    assert acknowledged >= 10  # a report every 200 ms for 3 s
    left = wait_for_instances(stub, 1, timeout=2).instances  # it said it was leaving
    assert [i.report.instance_id for i in left] == [flask.instance_id]


def test_watch_ends_at_its_deadline_on_a_quiet_placer(placer):
    result = subprocess.run(
        node_command(placer, "watch", "--count", "1000", "--timeout", "1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "of 1000 snapshot(s) within 1 s" in result.stderr


def test_an_unknown_command_is_refused_with_a_sentence(placer):
    result = subprocess.run(
        node_command(placer, "teleport"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "name a command: policy, place, infer, watch, register" in result.stderr


def test_node_balances_over_two_placers_and_passes_over_a_dead_one(start_placer, channels):
    alive = start_placer()
    dead = start_placer()
    flask = SimulatedAdapter(FLASK, f"{alive.address},{dead.address}").start()
    try:
        assert flask.wait_registered(10)
        dead.process.kill()
        dead.process.wait()
        both = f"{dead.address},{alive.address}"
        for _ in range(3):  # each run a new channel, which may try the dead placer first
            command = ["node", str(CLIENT), "--placer", both, "place", "--bytes", "1000"]
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            [placement] = [json.loads(line) for line in result.stdout.splitlines()]
            assert placement["platform"] == "PLATFORM_FLASK"
    finally:
        flask.stop()


REFLECT = ROOT / "examples" / "node-client" / "reflect.js"


def test_node_finds_and_calls_the_placer_by_reflection_alone(placer, stub, tokens):
    def reflect(*args: str) -> list[dict]:
        command = ["node", str(REFLECT), "--server", placer.address, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    services = {line["service"] for line in reflect("services")}
    assert {"straightline.v1.PlacerService", "inference.GRPCInferenceService"} <= services
    [answer] = reflect("call", "straightline.v1.PlacerService/GetPolicy")
    expected = stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy
    assert answer["policy"]["frequency_threshold_rps"] == expected.frequency_threshold_rps
    [live] = reflect("call", "inference.GRPCInferenceService/ServerLive")
    assert live == {"live": True}

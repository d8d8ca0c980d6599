"""A placer restarted with its policy file starts from the policy changed at run time."""

import subprocess
import sys

from google.protobuf import duration_pb2, field_mask_pb2

from straightline.v1 import placer_pb2, placer_pb2_grpc, types_pb2
from tests.support.waiting import wait_until


def update(stub, **fields) -> placer_pb2.Policy:
    request = placer_pb2.UpdatePolicyRequest(
        policy=placer_pb2.Policy(**fields), update_mask=field_mask_pb2.FieldMask(paths=[*fields])
    )
    return stub.UpdatePolicy(request, timeout=5).policy


def test_run_time_policy_changes_survive_a_restart(start_placer, channels, tmp_path):
    saved = tmp_path / "state" / "policy.json"
    first = start_placer("--policy-file", str(saved))
    stub = placer_pb2_grpc.PlacerServiceStub(channels(first.address))
    changed = update(
        stub,
        placement_rule=types_pb2.PLACEMENT_RULE_SLO_AWARE,
        latency_objectives={"demo": duration_pb2.Duration(nanos=250_000_000)},
        fallback_enabled=False,
    )
    first.terminate()
    assert oct(saved.stat().st_mode & 0o777) == "0o600"

    second = start_placer("--policy-file", str(saved))
    restored = (
        placer_pb2_grpc.PlacerServiceStub(channels(second.address))
        .GetPolicy(placer_pb2.GetPolicyRequest(), timeout=5)
        .policy
    )
    assert restored == changed
    assert restored.placement_rule == types_pb2.PLACEMENT_RULE_SLO_AWARE
    assert not restored.fallback_enabled


def test_an_unreadable_policy_file_stops_the_start_with_a_sentence(tmp_path):
    broken = tmp_path / "policy.json"
    broken.write_text('{"placement_rule": "PLACEMENT_RULE_TELEPATHY"}')
    result = subprocess.run(
        [
            *(sys.executable, "-m", "straightline_placer", "--listen", "127.0.0.1:0"),
            *("--metrics-listen", "off", "--policy-file", str(broken)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"the policy file {broken} is not a saved policy" in result.stderr
    assert "remove it to start from the configured policy" in result.stderr


def test_placers_sharing_a_policy_file_agree_on_the_policy(start_placer, channels, tmp_path):
    shared = str(tmp_path / "policy.json")
    first, second = (start_placer("--policy-file", shared) for _ in range(2))
    one, other = (placer_pb2_grpc.PlacerServiceStub(channels(p.address)) for p in (first, second))

    def policy_of(stub):
        return stub.GetPolicy(placer_pb2.GetPolicyRequest(), timeout=5).policy

    update(one, frequency_threshold_rps=3.0)
    assert wait_until(lambda: policy_of(other).frequency_threshold_rps == 3.0, timeout=5)
    # A change made on the other placer keeps the first one's: the file is read before writing.
    update(other, fallback_enabled=False)
    agreed = policy_of(other)
    assert (agreed.frequency_threshold_rps, agreed.fallback_enabled) == (3.0, False)
    assert wait_until(lambda: policy_of(one) == agreed, timeout=5)

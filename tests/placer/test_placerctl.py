"""straightline-placerctl against a real placer process, with simulated adapters: the policy
read and changed field by field, the live view, a placement, an inference whose trace goes
on into the placer, and bad command lines refused with a sentence and nothing changed."""

import re

import pytest

from scripts.localstack import set_policy
from straightline.v1 import placer_pb2, types_pb2
from straightline_common.timeconv import duration
from straightline_inference.simulated import CLASS_NAMES
from straightline_placer import ctl
from straightline_placer.ctl import UsageError, policy_update
from tests.support.stack import wait_for_instances
from tests.support.waiting import wait_until

FLASK, DOCKER = types_pb2.PLATFORM_FLASK, types_pb2.PLATFORM_DOCKER


@pytest.fixture
def placerctl(placer, capsys):
    """Runs one command in process; its exit code, standard output and standard error."""

    def run(*args: str) -> tuple[int, str, str]:
        code = ctl.main(["--placer", placer.address, "--timeout", "10", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def policy_of(stub) -> placer_pb2.Policy:
    return stub.GetPolicy(placer_pb2.GetPolicyRequest()).policy


def test_the_policy_is_shown_and_changed_field_by_field(placerctl, stub):
    code, out, _ = placerctl("policy")
    assert code == 0
    assert re.search(r"frequency_threshold_rps \(F\) +10 requests/s", out)
    assert re.search(r"heartbeat_timeout +1 s", out)  # the fixture's --heartbeat-timeout-s 1

    code, out, _ = placerctl(
        "set", "frequency_threshold_rps=25", "frequency_window=5s", "pinned_platform=docker"
    )
    assert code == 0 and re.search(r"pinned_platform +docker", out)
    policy = policy_of(stub)
    assert policy.frequency_threshold_rps == 25
    assert policy.frequency_window.seconds == 5
    assert policy.pinned_platform == DOCKER
    assert policy.data_size_threshold_bytes == 256 * 1024  # not named, not changed

    code, out, _ = placerctl("set", "pinned_platform=none", "placement_rule=capacity-aware")
    assert code == 0 and re.search(r"placement_rule +capacity-aware", out)
    assert placerctl("set", "fallback_enabled=off")[0] == 0
    code, out, _ = placerctl("set", "slo_attainment_target=0.95", "shed_late_requests=true")
    assert code == 0 and re.search(r"slo_attainment_target +0.95\n", out)
    assert re.search(r"shed_late_requests +true", out)
    policy = policy_of(stub)
    assert policy.pinned_platform == types_pb2.PLATFORM_UNSPECIFIED
    assert policy.placement_rule == types_pb2.PLACEMENT_RULE_CAPACITY_AWARE
    assert not policy.fallback_enabled
    assert (policy.slo_attainment_target, policy.shed_late_requests) == (0.95, True)


@pytest.mark.parametrize(
    ("assignment", "code", "message"),
    [
        ("frequency_threshold_rps=-1", 1, "INVALID_ARGUMENT"),
        ("data_size_threshold_bytes=7000000", 1, "INVALID_ARGUMENT"),
        ("frequency_window=10", 2, 'Duration must end with letter "s"'),
        ("pinned_platform=gpu", 2, "'gpu' is not one of: flask, docker, serverless, oip, none"),
        ("fallback_enabled=maybe", 2, "fallback_enabled: 'maybe' is not true or false"),
        ("threshold=3", 2, "is not field=value with a field of the policy"),
        ("frequency_threshold_rps", 2, "is not field=value"),
        ("latency_objectives.demo=7200s", 1, "a latency objective must be between"),
        ("platform_settings=cheap", 2, "platform_settings: the placer's config file"),
    ],
)
def test_a_bad_setting_is_refused_with_a_sentence_and_nothing_changes(
    placerctl, stub, assignment, code, message
):
    before = policy_of(stub)
    exit_code, out, err = placerctl("set", "frequency_threshold_rps=30", assignment)
    assert (exit_code, out) == (code, "")
    assert message in err and err.startswith("straightline-placerctl: ")
    assert policy_of(stub) == before


def test_instances_placement_and_inference_with_its_trace(
    placerctl, stub, adapters, otlp_receiver, tmp_path
):
    flask = adapters(FLASK, capacity=3)
    docker = adapters(DOCKER, capacity=1)
    wait_for_instances(stub, 2)

    code, out, _ = placerctl("instances")
    assert code == 0 and "free slots: flask 3, docker 1\n" in out
    assert re.search(rf"{flask.instance_id} +flask +\S+ +3 +3 +0 +0  demo", out)
    assert re.search(rf"{docker.instance_id} +docker", out)

    code, out, _ = placerctl("place", "--model", "demo", "--bytes", "300000")
    assert code == 0 and out.startswith(f"docker {docker.instance_id} (large_data)")
    assert "r_d 300,000 B against D 262,144" in out
    assert "recent p95" not in out  # the paper's rule compares no latencies

    image = tmp_path / "picture.jpg"
    image.write_bytes(b"\xff\xd8" + b"\x00" * 999)  # the simulated adapter does not decode
    code, out, _ = placerctl("infer", str(image), "--model", "demo", "--top-k", "1")
    assert code == 0
    assert f"served by flask {flask.instance_id} in" in out
    assert CLASS_NAMES[1001 % len(CLASS_NAMES)] in out
    [trace_id] = re.findall(r"^trace ([0-9a-f]{32})$", out, re.MULTILINE)
    otlp_receiver.wait_for(
        lambda s: s.trace_id == trace_id and s.name == "placer.place"
    )  # the command's trace goes on into the placer


def test_a_latency_aware_placement_shows_the_latencies_it_compared(
    placerctl, stub, adapters, tmp_path
):
    flask = adapters(FLASK, capacity=2, service_time_s=0.05)
    wait_for_instances(stub, 1)
    image = tmp_path / "picture.jpg"
    image.write_bytes(b"\xff\xd8" + b"\x00" * 99)
    assert placerctl("infer", str(image), "--model", "demo")[0] == 0  # flask measures itself
    placerctl("set", "placement_rule=latency-aware", "frequency_threshold_rps=0.01")

    def placed() -> str:
        return placerctl("place", "--model", "demo", "--bytes", "1000")[1]

    # Once its heartbeat tells: the simulated 50 ms and what the adapter adds around it.
    measured = r"flask 5[0-2]\.\d ms"
    assert wait_until(lambda: re.search(measured, placed()))
    out = placed()
    assert out.startswith(f"flask {flask.instance_id} (fastest_free)")
    assert re.search(f"recent p95 of free platforms: {measured}", out)


def test_the_policy_shows_a_platforms_batching_ceilings(placerctl, stub):
    docker = placer_pb2.PlatformSettings(
        platform=DOCKER,
        memory_mb=2048,
        bandwidth_bytes_per_second=10**9,
        max_request_bytes=10**6,
        batching=types_pb2.BatchingLimits(max_batch_size=4, max_queue_delay=duration(0.005)),
    )
    set_policy(stub, platform_settings=[docker])
    code, out, _ = placerctl("policy")
    assert code == 0
    assert re.search(
        r"platform_settings.docker .*, batches at most 4 and waiting at most 5.0 ms", out
    )
    assert "batches" not in next(line for line in out.splitlines() if "settings.flask" in line)


def test_an_slo_aware_placement_shows_its_objective_and_predictions(placerctl, stub, adapters):
    adapters(FLASK, capacity=2)
    wait_for_instances(stub, 1)
    code, out, _ = placerctl(
        "set",
        "placement_rule=slo-aware",
        "default_latency_objective=0.5s",
        "latency_objectives.demo=0.2s",
    )
    assert code == 0
    assert re.search(r"placement_rule +slo-aware", out)
    assert re.search(r"default_latency_objective +500.0 ms", out)
    assert re.search(r"latency_objectives.demo +200.0 ms", out)
    assert re.search(r"platform_settings.serverless +\$0/instance-hour, \$1.66667e-05/GB-s", out)
    code, out, _ = placerctl("place", "--model", "demo", "--bytes", "1000")
    assert code == 0 and "(cheapest_within_objective)" in out
    assert re.search(
        r"predicted: flask [0-9.]+ ms \(margin [+-][0-9.]+\) \$[0-9.]+ \(objective 200.0 ms\)", out
    )


def test_an_unreadable_image_or_an_unknown_type_is_refused_before_any_call(placerctl, tmp_path):
    code, _, err = placerctl("infer", str(tmp_path / "missing.jpg"), "--model", "demo")
    assert code == 2 and "cannot read" in err and "missing.jpg" in err
    odd = tmp_path / "picture.unknownext"
    odd.write_bytes(b"x")
    code, _, err = placerctl("infer", str(odd), "--model", "demo")
    assert code == 2 and "give --content-type" in err


def test_an_unreachable_placer_is_reported_as_unavailable(capsys):
    code = ctl.main(["--placer", "127.0.0.1:9", "--timeout", "2", "policy"])
    assert code == 1 and "UNAVAILABLE" in capsys.readouterr().err


def test_policy_update_names_only_the_fields_given():
    request = policy_update(["placement_rule=capacity-aware", "data_size_threshold_bytes=1000"])
    assert list(request.update_mask.paths) == ["placement_rule", "data_size_threshold_bytes"]
    assert request.policy.placement_rule == types_pb2.PLACEMENT_RULE_CAPACITY_AWARE
    assert request.policy.data_size_threshold_bytes == 1000
    with pytest.raises(
        UsageError, match="is not one of: paper, capacity-aware, latency-aware, slo-aware, none"
    ):
        policy_update(["placement_rule=fastest"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["place", "--model", "demo", "--bytes", "-5"],
            "argument --bytes: '-5': must be zero or more",
        ),
        (["--timeout", "0", "policy"], "'0': must be a positive number of seconds"),
        (["infer", "x.jpg", "--model", "demo", "--top-k", "-1"], "'-1': must be zero or more"),
    ],
)
def test_a_bad_number_on_the_command_line_is_a_usage_error(capsys, args, message):
    with pytest.raises(SystemExit) as exited:
        ctl.main(["--placer", "127.0.0.1:9", *args])
    assert exited.value.code == 2 and message in capsys.readouterr().err

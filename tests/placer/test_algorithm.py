"""Algorithm 1, branch by branch and boundary by boundary (the paper's lines 3-20)."""

import pytest

from straightline.v1 import types_pb2
from straightline_placer.algorithm import Branch, Platform, Rule, place

F, D = 10.0, 1000

CASES = [
    # (f_t, r_d, S_F, S_D) -> (platform, branch), with the line of the paper that decides.
    pytest.param(
        10.1,
        999,
        True,
        True,
        Platform.SERVERLESS,
        Branch.HIGH_FREQUENCY_SMALL_DATA,
        id="line3-high-frequency-small",
    ),
    pytest.param(
        500.0,
        1,
        False,
        False,
        Platform.SERVERLESS,
        Branch.HIGH_FREQUENCY_SMALL_DATA,
        id="line3-ignores-capacity",
    ),
    pytest.param(
        10.0, 999, True, True, Platform.FLASK, Branch.FLASK_AVAILABLE, id="f_t-equal-F-is-not-high"
    ),
    pytest.param(
        10.1,
        1000,
        True,
        True,
        Platform.FLASK,
        Branch.FLASK_AVAILABLE,
        id="r_d-equal-D-is-moderate-even-at-high-frequency",
    ),
    pytest.param(
        10.1,
        1000,
        False,
        True,
        Platform.DOCKER,
        Branch.DOCKER_AVAILABLE,
        id="r_d-equal-D-high-frequency-flask-full",
    ),
    pytest.param(
        10.1,
        1000,
        False,
        False,
        Platform.SERVERLESS,
        Branch.NOTHING_AVAILABLE,
        id="r_d-equal-D-high-frequency-all-full",
    ),
    pytest.param(0.0, 1001, True, True, Platform.DOCKER, Branch.LARGE_DATA, id="line7-large-data"),
    pytest.param(
        99.0,
        1001,
        True,
        True,
        Platform.DOCKER,
        Branch.LARGE_DATA,
        id="line7-large-data-at-high-frequency",
    ),
    pytest.param(
        0.0,
        1001,
        False,
        False,
        Platform.DOCKER,
        Branch.LARGE_DATA,
        id="line7-large-data-even-without-docker-capacity",
    ),
    pytest.param(
        1.0, 500, True, False, Platform.FLASK, Branch.FLASK_AVAILABLE, id="line11-flask-available"
    ),
    pytest.param(1.0, 1000, True, True, Platform.FLASK, Branch.FLASK_AVAILABLE, id="line11-at-D"),
    pytest.param(
        1.0,
        500,
        False,
        True,
        Platform.DOCKER,
        Branch.DOCKER_AVAILABLE,
        id="line15-flask-full-docker-available",
    ),
    pytest.param(
        1.0,
        500,
        False,
        False,
        Platform.SERVERLESS,
        Branch.NOTHING_AVAILABLE,
        id="line18-nothing-available",
    ),
    pytest.param(
        10.0, 1, False, False, Platform.SERVERLESS, Branch.NOTHING_AVAILABLE, id="line18-at-F"
    ),
]


@pytest.mark.parametrize(("f_t", "r_d", "s_f", "s_d", "platform", "branch"), CASES)
def test_algorithm_1(f_t, r_d, s_f, s_d, platform, branch):
    decision = place(f_t, r_d, F, D, s_f, s_d)
    assert (decision.platform, decision.branch) == (platform, branch)


@pytest.mark.parametrize(
    ("f_t", "r_d", "s_f", "s_d", "platform", "branch"),
    [
        pytest.param(
            10.1, 999, True, True, Platform.FLASK, Branch.FLASK_AVAILABLE, id="line3-on-to-flask"
        ),
        pytest.param(
            500.0, 1, False, True, Platform.DOCKER, Branch.DOCKER_AVAILABLE, id="line3-to-docker"
        ),
        pytest.param(500.0, 1, False, False, None, Branch.NO_CAPACITY, id="line3-refused"),
        pytest.param(
            500.0, 1001, False, False, Platform.DOCKER, Branch.LARGE_DATA, id="line7-unchanged"
        ),
        pytest.param(1.0, 500, False, False, None, Branch.NO_CAPACITY, id="line18-refused"),
    ],
)
def test_with_serverless_full_line_3_passes_and_line_18_refuses(
    f_t, r_d, s_f, s_d, platform, branch
):
    decision = place(f_t, r_d, F, D, s_f, s_d, serverless_available=False)
    assert (decision.platform, decision.branch) == (platform, branch)


@pytest.mark.parametrize(
    ("enum_class", "proto_name"),
    [(Platform, "Platform"), (Branch, "Branch"), (Rule, "PlacementRule")],
)
def test_enums_match_the_contract(enum_class, proto_name):
    proto_enum = getattr(types_pb2, proto_name)
    prefix = "".join(f"_{c}" if c.isupper() else c for c in proto_name).strip("_").upper() + "_"
    for member in enum_class:
        assert proto_enum.Value(prefix + member.name) == member.value
    assert len(proto_enum.values()) == len(enum_class) + 1  # plus UNSPECIFIED

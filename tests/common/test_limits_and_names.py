"""The validator of names, the request limits, roles and tokens: the pieces every service's
interceptor and store rely on."""

import json
import os
import stat

import pytest

from inference import open_inference_grpc_pb2 as oip
from straightline.v1 import devrunner_pb2, placer_pb2, types_pb2
from straightline_common import auth, limits, names
from straightline_common.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from straightline_common.modelstore import ModelStore


@pytest.mark.parametrize("name", ["xception", "small-v2", "a.b_c", "0"])
def test_plain_model_names_pass(name):
    assert names.check_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "..", "a..b", "../etc", "/etc", "a/b", "a?b", "a#b", "A", ".hidden", "x" * 64]
)
def test_names_that_could_leave_a_path_segment_are_refused(name):
    with pytest.raises(InvalidArgument, match="is not valid: use 1-63 lower-case"):
        names.check_model_name(name)


@pytest.mark.parametrize("version", ["../1", "0", "-1", "1.0", "1234567890", "²"])
def test_versions_are_positive_integers(version):
    with pytest.raises(InvalidArgument, match="positive integer"):
        names.check_version(version)
    assert names.check_version("") == "" and names.check_version("12") == "12"


def test_refusals_do_not_quote_long_or_unprintable_values():
    with pytest.raises(InvalidArgument) as refused:
        names.check_model_name("m" * 1_000_000)
    assert "(a value of 1000000 characters)" in str(refused.value)
    assert len(str(refused.value)) < 200
    with pytest.raises(InvalidArgument) as refused:
        names.check_id("a\r\nb", "request_id")
    assert "\r" not in str(refused.value)


def test_inside_refuses_paths_that_leave_the_root_even_through_a_link(tmp_path):
    root = tmp_path / "root"
    (root / "models").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path)
    assert names.inside(root, "models") == (root / "models").resolve()
    for parts in (("..",), ("/etc",), ("escape", "x"), ("models", "..", "..")):
        with pytest.raises(InvalidArgument, match="outside its directory"):
            names.inside(root, *parts)


def test_the_model_store_resolves_only_valid_names_under_its_root(tmp_path):
    secret = tmp_path / "secret" / "1"
    secret.mkdir(parents=True)
    (secret / "metadata.json").write_text("{}")
    store = ModelStore(tmp_path / "store")
    with pytest.raises(InvalidArgument):
        store.resolve("../secret", "1")
    with pytest.raises(NotFound):
        store.resolve("secret", "1")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "..weird").mkdir()
    assert store.names() == []


def test_request_limits_name_the_field_and_never_quote_it():
    fine = placer_pb2.InferRequest(request_id="r-1", model=types_pb2.ModelRef(name="m"))
    limits.check_message(fine)
    long_id = placer_pb2.InferRequest(request_id="r" * 5000)
    with pytest.raises(InvalidArgument, match="request_id is 5000 characters long, over the"):
        limits.check_message(long_id)
    nested = placer_pb2.InferRequest(model=types_pb2.ModelRef(name="a\x00b"))
    with pytest.raises(InvalidArgument, match=r"model\.name contains a control character"):
        limits.check_message(nested)
    labels = devrunner_pb2.JobSpec(labels={f"k{i}": "v" for i in range(10_001)})
    with pytest.raises(InvalidArgument, match="labels has 10001 entries, over the limit of 10000"):
        limits.check_message(labels)
    huge_value = devrunner_pb2.JobSpec(labels={"k": "v" * 2000})
    with pytest.raises(InvalidArgument, match="over the limit of 1024"):
        limits.check_message(huge_value)


def test_tensor_numbers_are_bounded_by_the_message_size_but_their_strings_are_not_spared():
    # An OIP image of 299 x 299 x 3 typed values: far over the entry limit, and fine.
    pixels = oip.InferTensorContents(uint_contents=[7] * (299 * 299 * 3))
    image = oip.ModelInferRequest.InferInputTensor(name="image", datatype="UINT8", contents=pixels)
    limits.check_message(oip.ModelInferRequest(model_name="m", inputs=[image]))
    many = oip.InferTensorContents(bytes_contents=[b"x"] * 10_001)
    tensor = oip.ModelInferRequest.InferInputTensor(name="image", contents=many)
    with pytest.raises(InvalidArgument, match="bytes_contents has 10001 entries"):
        limits.check_message(oip.ModelInferRequest(inputs=[tensor]))


def test_tokens_file_is_created_once_readable_only_by_its_user(tmp_path):
    path = tmp_path / "state" / "tokens.json"
    first = auth.load_tokens(path, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = auth.load_tokens(path, create=True)  # another service starting: same tokens
    assert {r: first.of(r) for r in auth.Role} == {r: again.of(r) for r in auth.Role}
    assert len({first.of(r) for r in auth.Role}) == len(auth.Role)
    assert set(json.loads(path.read_text())) == {r.value for r in auth.Role}
    assert os.listdir(path.parent) == ["tokens.json"]  # no draft left behind


def test_a_token_identifies_its_role_and_nothing_else(tmp_path):
    tokens = auth.load_tokens(tmp_path / "t.json", create=True)
    assert tokens.identify(tokens.of(auth.Role.OPERATOR)) == auth.Identity(
        auth.Role.OPERATOR, "operator"
    )
    assert tokens.identify(tokens.of(auth.Role.OPERATOR)[:-1]) is None
    assert tokens.identify("") is None


def test_a_missing_tokens_file_is_a_sentence_for_clients(tmp_path):
    with pytest.raises(Unauthenticated, match="no tokens file at"):
        auth.load_tokens(tmp_path / "absent.json")


def test_authorization_by_role():
    access = auth.access_of("s.S", {"Write": frozenset({auth.Role.OPERATOR})})
    operator = auth.Identity(auth.Role.OPERATOR, "o")
    assert auth.authorize(operator, "/s.S/Write", access) == operator
    with pytest.raises(PermissionDenied, match="is for operator; this caller is client"):
        auth.authorize(auth.Identity(auth.Role.CLIENT, "c"), "/s.S/Write", access)
    with pytest.raises(PermissionDenied, match="is for no caller"):
        auth.authorize(operator, "/s.S/Unlisted", access)
    with pytest.raises(Unauthenticated, match="needs credentials"):
        auth.authorize(None, "/s.S/Write", access)


@pytest.mark.parametrize(
    ("uri", "identity"),
    [
        (
            "spiffe://straightline/adapter/flask",
            auth.Identity(auth.Role.ADAPTER, "flask", certified=True),
        ),
        ("spiffe://straightline/service/devrunner", None),
        ("spiffe://straightline/adapter/", None),
        ("spiffe://elsewhere/adapter/flask", None),
    ],
)
def test_certificate_uris_name_roles(uri, identity):
    assert auth.identity_from_uri(uri) == identity

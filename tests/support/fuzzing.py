"""Fuzzing RPCs. Hypothesis strategies for any protobuf message, built from its descriptor:
every field present or not, strings with control characters and of every length up to past
the limits, numbers at their types' edges (NaN and infinities included), unknown enum
values, nested messages to a bounded depth, lists and maps of a few entries; the statuses a
fuzzed request may get; and a call of any RPC shape with a message."""

import grpc
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_INTEGERS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "..", "../../etc", "/", "a/b?c#d", "\r\n", "²", "x" * 2000]),
)


def messages(message_class: type[Message], depth: int = 3) -> st.SearchStrategy[Message]:
    descriptor = message_class.DESCRIPTOR
    fields = {field.name: _field(field, depth) for field in descriptor.fields}

    @st.composite
    def build(draw):
        message = message_class()
        for name, strategy in fields.items():
            if draw(st.booleans()):
                _set(message, descriptor.fields_by_name[name], draw(strategy))
        return message

    return build()


def _set(message: Message, field, value) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        target = getattr(message, field.name)
        for key, item in value.items():
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        getattr(message, field.name).extend(value)
    elif field.type == F.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _field(field, depth: int) -> st.SearchStrategy:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = _scalar(field.message_type.fields_by_name["key"], depth)
        value = _scalar(field.message_type.fields_by_name["value"], depth)
        return st.dictionaries(key, value, max_size=3)
    single = _scalar(field, depth)
    return st.lists(single, max_size=3) if field.is_repeated else single


def _scalar(field, depth: int) -> st.SearchStrategy:
    kind = field.type
    if kind == F.TYPE_MESSAGE:
        if depth <= 0:
            return st.just(GetMessageClass(field.message_type)())
        return st.deferred(lambda: messages(GetMessageClass(field.message_type), depth - 1))
    if kind in _INTEGERS:
        low, high = _INTEGERS[kind]
        return st.one_of(st.sampled_from([low, high, 0, 1]), st.integers(low, high))
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        width = 64 if kind == F.TYPE_DOUBLE else 32
        return st.floats(allow_nan=True, allow_infinity=True, width=width)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_ENUM:
        return st.integers(-1, 20)
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=64)
    return _TEXT


# What a malformed, unauthorized, or unanswerable request may get; never INTERNAL or UNKNOWN.
ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
}
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def call(channel, service: str, method: str, shape: str, message) -> grpc.StatusCode:
    """`service`: its full name (straightline.v1.PlacerService, inference.GRPCInferenceService)."""
    path, serialize = f"/{service}/{method}", type(message).SerializeToString
    try:
        if shape == "unary":
            channel.unary_unary(path, serialize, bytes)(message, timeout=5)
        elif shape == "stream":
            next(iter(channel.unary_stream(path, serialize, bytes)(message, timeout=2)), None)
        else:
            list(channel.stream_stream(path, serialize, bytes)(iter([message]), timeout=5))
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def assert_fuzzed_answers_are_actionable(
    channel, service: str, method: str, shape: str, request_class
):
    """Sends FUZZ's examples of `request_class` to `method`; none may answer outside ACCEPTABLE."""

    @FUZZ
    @given(messages(request_class))
    def fuzz(message):
        code = call(channel, service, method, shape, message)
        assert code in ACCEPTABLE, f"{method} answered {code.name} to {message}"

    fuzz()

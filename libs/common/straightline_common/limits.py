"""Limits every request message must keep, checked once for every RPC of every service
(`grpcserver` runs `check_message` on each message a client sends), so that no field a
client chooses can make a service build a huge string, echo a hostile one, or loop long.

Strings: at most MAX_STRING_CHARS characters, no control characters (they would be spliced
into logs, metadata and URLs). Repeated and map fields of strings, bytes and messages: at most
MAX_ENTRIES entries (a service may hold a field to less: a PlaceBatch takes 10,000 requests,
a job 32 labels). Bytes fields (payloads) and repeated numbers (an Open Inference Protocol
tensor's contents) are bounded by the server's message size limit instead. A refusal names the
field and the limit, and never quotes the value.
"""

from collections.abc import Sized

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from straightline_common.errors import InvalidArgument

MAX_STRING_CHARS = 1024
MAX_ENTRIES = 10_000
_ITEMS_CHECKED = {
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_BYTES,
    FieldDescriptor.TYPE_MESSAGE,
}
_CONTROL = {chr(c) for c in range(32)} | {"\x7f"}


def check_message(message: Message, path: str = "") -> None:
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if _is_map(field):
            _check_count(name, value)
            for key, item in value.items():
                _check_value(f"{name} key", key)
                _check_value(f"{name}[…]", item)
        elif field.is_repeated and field.type in _ITEMS_CHECKED:
            _check_count(name, value)
            for item in value:
                _check_value(name, item)
        elif field.is_repeated:
            continue  # numbers: the message size bounds them
        else:
            _check_value(name, value)


def _check_value(name: str, value: object) -> None:
    if isinstance(value, str):
        check_string(name, value)
    elif isinstance(value, Message):
        check_message(value, f"{name}.")


def check_string(name: str, value: str, limit: int = MAX_STRING_CHARS) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"{name} is {len(value)} characters long, over the limit of {limit}")
    if not _CONTROL.isdisjoint(value):
        raise InvalidArgument(f"{name} contains a control character; send printable text")


def _check_count(name: str, entries: Sized) -> None:
    if len(entries) > MAX_ENTRIES:
        raise InvalidArgument(f"{name} has {len(entries)} entries, over the limit of {MAX_ENTRIES}")


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == FieldDescriptor.TYPE_MESSAGE
        and field.is_repeated
        and field.message_type is not None
        and field.message_type.GetOptions().map_entry
    )

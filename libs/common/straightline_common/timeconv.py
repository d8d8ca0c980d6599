"""Seconds to and from google.protobuf.Duration."""

from google.protobuf import duration_pb2


def duration(seconds: float) -> duration_pb2.Duration:
    message = duration_pb2.Duration()
    message.FromNanoseconds(int(seconds * 1e9))
    return message


def seconds(message: duration_pb2.Duration) -> float:
    return message.ToNanoseconds() / 1e9

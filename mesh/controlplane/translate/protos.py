"""Small proto helpers shared by the builders (durations, Any packing, config sources)."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from mesh.api._base import parse_duration


def duration(text_or_seconds: str | float) -> duration_pb2.Duration:
    seconds = parse_duration(text_or_seconds) if isinstance(text_or_seconds, str) else text_or_seconds
    d = duration_pb2.Duration()
    d.seconds = int(seconds)
    d.nanos = round((seconds - int(seconds)) * 1e9)
    return d


def packed(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def u32(v: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=v)


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def fraction(percent: float) -> percent_pb2.FractionalPercent:
    """Istio's conversion: percentage.value -> numerator value*10000 over MILLION."""
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10000), denominator=percent_pb2.FractionalPercent.MILLION
    )


MAX_UINT32 = 4294967295

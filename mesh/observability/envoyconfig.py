"""The Envoy side of telemetry, pure: options in, Envoy config out. Translation attaches `http_access_log` and
`http_tracing` to each HTTP connection manager; the bootstrap adds `bootstrap_additions` (the collector's cluster,
and each sidecar binding its upstream connections to its pod IP so the callee can tell who called).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict, Field

from mesh.envoyjson import socket_address, static_cluster

TELEMETRY_CLUSTER = "mesh-telemetry"
ALS = "envoy.access_loggers.http_grpc"
OTEL = "envoy.tracers.opentelemetry"
Reporter = Literal["source", "destination"]  # which end of a request the reporting proxy is


class TelemetryOptions(BaseModel):
    """Mesh-wide (Istio: meshConfig.defaultProviders + Telemetry API's randomSamplingPercentage)."""

    model_config = ConfigDict(frozen=True)

    collector_host: str = "127.0.0.1"
    collector_port: int = 0
    metrics: bool = True
    tracing: bool = True
    sampling: float = Field(default=100.0, ge=0.0, le=100.0)  # percent of requests that start a trace
    flush_interval_ms: int = Field(default=200, ge=10)  # how long Envoy may batch access-log entries
    # Envoy also flushes when this many bytes are buffered (its default, 16 KiB, is ~30 entries: at thousands of
    # requests per second that is a gRPC message every few milliseconds per proxy)
    buffer_bytes: int = Field(default=1 << 20, ge=1024)


def _pack(m: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(m)
    return a


def _grpc() -> grpc_service_pb2.GrpcService:
    return grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=TELEMETRY_CLUSTER)
    )


def http_access_log(options: TelemetryOptions, reporter: Reporter) -> accesslog_pb2.AccessLog:
    """gRPC ALS: one entry per request, batched for `flush_interval_ms`; the collector turns them into metrics."""
    flush = duration_pb2.Duration()
    flush.FromMilliseconds(options.flush_interval_ms)
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=f"istio-{reporter}",
            grpc_service=_grpc(),
            transport_api_version=2,  # V3
            buffer_flush_interval=flush,
            buffer_size_bytes={"value": options.buffer_bytes},
        ),
        additional_request_headers_to_log=["content-type"],  # request_protocol: grpc or http
        # grpc-status rides in trailers, or in the headers of a trailers-only reply (errors, Envoy's gRPC aborts)
        additional_response_headers_to_log=["grpc-status"],
        additional_response_trailers_to_log=["grpc-status"],
    )
    return accesslog_pb2.AccessLog(name=ALS, typed_config=_pack(config))


def http_tracing(options: TelemetryOptions, service_name: str) -> hcm.HttpConnectionManager.Tracing:
    """Envoy's native OpenTelemetry tracer, W3C traceparent; `service_name` as Istio names it (`app.namespace`)."""
    otel = opentelemetry_pb2.OpenTelemetryConfig(grpc_service=_grpc(), service_name=service_name)
    return hcm.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(name=OTEL, typed_config=_pack(otel)),
        random_sampling=percent_pb2.Percent(value=options.sampling),
        spawn_upstream_span={"value": False},
    )


def instrument(
    m: hcm.HttpConnectionManager,
    options: TelemetryOptions | None,
    reporter: Reporter,
    service_name: str,
) -> hcm.HttpConnectionManager:
    """A copy of `m` with the access logger and tracer the options ask for (the input is shared, never mutated)."""
    if options is None or not (options.metrics or options.tracing):
        return m
    out = hcm.HttpConnectionManager()
    out.CopyFrom(m)
    if options.metrics:
        out.access_log.append(http_access_log(options, reporter))
    if options.tracing:
        out.tracing.CopyFrom(http_tracing(options, service_name))
    return out


def bootstrap_additions(options: TelemetryOptions, proxy_ip: str | None) -> dict[str, Any]:
    """Merged into the bootstrap: the collector's static cluster (HTTP/2 for gRPC) and, with `proxy_ip`, the upstream
    bind address (so the callee's access log names this proxy as the caller)."""
    cluster = static_cluster(
        TELEMETRY_CLUSTER, socket_address(options.collector_host, options.collector_port), http2=True
    )
    bind = {"upstream_bind_config": {"source_address": {"address": proxy_ip, "port_value": 0}}} if proxy_ip else {}
    return {"clusters": [cluster], "cluster_manager": bind}


def add_to_bootstrap(
    bootstrap: dict[str, Any], options: TelemetryOptions | None, proxy_ip: str | None
) -> dict[str, Any]:
    """`proxy_ip=None`: no bind (a proxy whose own address cannot reach its upstreams, like a gateway on loopback in
    front of pods in their own namespaces: the callee then sees the host's bridge address)."""
    if options is None or not (options.metrics or options.tracing):
        return bootstrap
    extra = bootstrap_additions(options, proxy_ip)
    out = dict(bootstrap)
    static = dict(out.get("static_resources", {}))
    static["clusters"] = [*static.get("clusters", []), *extra["clusters"]]
    out["static_resources"] = static
    if extra["cluster_manager"]:
        out["cluster_manager"] = {**out.get("cluster_manager", {}), **extra["cluster_manager"]}
    return out


def instrument_static(
    bootstrap: dict[str, Any],
    options: TelemetryOptions,
    reporter: Reporter,
    service_name: str,
    node_id: str,
) -> dict[str, Any]:
    """The same telemetry on a hand-written static bootstrap (benchmarks and tests of one hop without xDS)."""
    out: dict[str, Any] = json.loads(json.dumps(bootstrap))
    out["node"] = {"id": node_id, "cluster": service_name}
    extra = _as_json(instrument(hcm.HttpConnectionManager(), options, reporter, service_name))
    for listener in out["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["typed_config"]["@type"].endswith("HttpConnectionManager"):
                    f["typed_config"].update(extra)
    out["static_resources"]["clusters"] += bootstrap_additions(options, None)["clusters"]
    return out


def _as_json(m: hcm.HttpConnectionManager) -> dict[str, Any]:
    return dict(json_format.MessageToDict(m, preserving_proto_field_name=True))

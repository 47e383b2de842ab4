"""Synthetic access-log entries and workloads: real protobuf messages, as Envoy sends them."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.data.accesslog.v3 import accesslog_pb2 as al
from google.protobuf import duration_pb2

from mesh.observability.workloads import Workload, WorkloadDirectory

PRODUCTPAGE = Workload(
    ip="127.9.1.1", name="productpage-v1", pod="productpage-v1-0", namespace="default", app="productpage",
    version="v1", service_account="productpage", service="productpage.default.svc.cluster.local",
)  # fmt: skip
REVIEWS_V1 = Workload(
    ip="127.9.2.1", name="reviews-v1", pod="reviews-v1-0", namespace="default", app="reviews",
    version="v1", service_account="reviews", service="reviews.default.svc.cluster.local",
)  # fmt: skip
REVIEWS_V3 = Workload(
    ip="127.9.3.1", name="reviews-v3", pod="reviews-v3-0", namespace="default", app="reviews",
    version="v3", service_account="reviews", service="reviews.default.svc.cluster.local",
)  # fmt: skip


def directory() -> WorkloadDirectory:
    return WorkloadDirectory(workloads=[PRODUCTPAGE, REVIEWS_V1, REVIEWS_V3])


def addr(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def http_entry(
    *,
    upstream: str = "",
    cluster: str = "",
    downstream: str = "127.0.0.1",
    code: int = 200,
    ms: int = 3,
    peer_uri: str = "",
    fault: bool = False,
    req_bytes: tuple[int, int] = (100, 0),
    resp_bytes: tuple[int, int] = (80, 120),
    authority: str = "",
) -> al.HTTPAccessLogEntry:
    e = al.HTTPAccessLogEntry()
    c = e.common_properties
    if upstream:
        c.upstream_remote_address.CopyFrom(addr(upstream, 9080))
    c.upstream_cluster = cluster
    c.downstream_direct_remote_address.CopyFrom(addr(downstream, 40000))
    c.downstream_remote_address.CopyFrom(addr(downstream, 40000))
    c.time_to_last_downstream_tx_byte.CopyFrom(duration_pb2.Duration(nanos=ms * 1_000_000))
    c.response_flags.fault_injected = fault
    if peer_uri:
        c.tls_properties.peer_certificate_properties.subject_alt_name.add(uri=peer_uri)
    e.request.authority = authority
    e.request.request_headers_bytes, e.request.request_body_bytes = req_bytes
    e.response.response_code.value = code
    e.response.response_headers_bytes, e.response.response_body_bytes = resp_bytes
    return e

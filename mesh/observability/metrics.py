"""Istio's standard metrics, computed exactly from Envoy's access-log entries (one per request or connection).

Names, labels and histogram buckets are Istio's (`istio_requests_total`, `istio_request_duration_milliseconds`,
`istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`), so Istio's dashboards and Kiali's queries read them
unchanged. How each label is derived is in docs/observability.md; `labels_for` is the one place that decides it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from envoy.data.accesslog.v3 import accesslog_pb2 as al

from mesh.observability.envoyconfig import Reporter
from mesh.observability.workloads import Workload, WorkloadDirectory

# Envoy's default histogram buckets, which Istio's proxies use for every istio_* histogram
BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip

LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS = tuple(n for n in LABELS if n not in ("response_code", "grpc_response_status", "request_protocol"))
CLUSTER_ID = "Kubernetes"  # Istio's default cluster id for a single-cluster mesh
UNKNOWN = "unknown"

# Envoy's short response-flag codes (as %RESPONSE_FLAGS% prints them), keyed by the ALS field
FLAG_CODES: tuple[tuple[str, str], ...] = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("unauthorized_details", "UAEX"),
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
    ("downstream_remote_reset", "DR"),
)


def response_flags(flags: al.ResponseFlags) -> str:
    codes = [
        code
        for name, code in FLAG_CODES
        if (flags.HasField(name) if name == "unauthorized_details" else getattr(flags, name))
    ]
    return ",".join(codes) or "-"


def parse_cluster(name: str) -> tuple[str, str, str] | None:
    """`outbound|9080|v1|reviews.default.svc.cluster.local` -> (port, subset, fqdn)."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return None
    return parts[1], parts[2], parts[3]


def _ip(address: object) -> str:
    sock = getattr(address, "socket_address", None)
    return str(getattr(sock, "address", "")) if sock is not None else ""


def _side(prefix: str, w: Workload | None, principal: str = "") -> dict[str, str]:
    if w is None:
        return {
            f"{prefix}_workload": UNKNOWN,
            f"{prefix}_workload_namespace": UNKNOWN,
            f"{prefix}_principal": principal or UNKNOWN,
            f"{prefix}_app": UNKNOWN,
            f"{prefix}_version": UNKNOWN,
            f"{prefix}_canonical_service": UNKNOWN,
            f"{prefix}_canonical_revision": "latest",
            f"{prefix}_cluster": UNKNOWN,
        }
    return {
        f"{prefix}_workload": w.name,
        f"{prefix}_workload_namespace": w.namespace,
        f"{prefix}_principal": principal or UNKNOWN,
        f"{prefix}_app": w.app,
        f"{prefix}_version": w.version,
        f"{prefix}_canonical_service": w.app,
        f"{prefix}_canonical_revision": w.version or "latest",
        f"{prefix}_cluster": CLUSTER_ID,
    }


def _peer_uri(tls: al.TLSProperties) -> str:
    for san in tls.peer_certificate_properties.subject_alt_name:
        if san.uri:
            return str(san.uri)
    return ""


@dataclass(frozen=True)
class Peers:
    """Who is on each end of one request, as the reporting proxy sees it."""

    reporter: Reporter
    source: Workload | None
    destination: Workload | None
    source_principal: str
    destination_principal: str
    security: str  # mutual_tls | none | unknown
    service: str  # destination_service FQDN, or the authority when no service matched


def service_of_authority(authority: str, me: Workload | None, directory: WorkloadDirectory) -> str:
    """`reviews:9080` -> `reviews.default.svc.cluster.local` when the mesh has that service (the caller's namespace
    first), as Istio resolves short hosts; the bare host otherwise."""
    host = authority.rpartition(":")[0] if authority.count(":") == 1 else authority
    known = {w.service for w in directory.all()}
    for candidate in (f"{host}.{me.namespace}.svc.cluster.local" if me else "", f"{host}.svc.cluster.local", host):
        if candidate in known:
            return candidate
    return host or UNKNOWN


def peers(
    entry: al.AccessLogCommon,
    reporter: Reporter,
    me: Workload | None,
    directory: WorkloadDirectory,
    authority: str = "",
) -> Peers:
    """The reporter is one end; the other is looked up by address (see `workloads`), never guessed from names."""
    if reporter == "source":
        dest = directory.get(_ip(entry.upstream_remote_address))
        parsed = parse_cluster(entry.upstream_cluster)
        # no cluster when no upstream was picked (a fault abort, no route): the request's host names the service
        service = parsed[2] if parsed else (dest.service if dest else service_of_authority(authority, me, directory))
        # like Istio: the source reporter cannot see the handshake's outcome, it reports "unknown"
        dest_principal = dest.principal if dest is not None and parsed is not None else UNKNOWN
        return Peers(reporter, me, dest, me.principal if me else UNKNOWN, dest_principal, UNKNOWN, service or UNKNOWN)
    uri = _peer_uri(entry.tls_properties)
    src = directory.get(_ip(entry.downstream_direct_remote_address)) or (directory.by_principal(uri) if uri else None)
    mtls = bool(uri)
    return Peers(
        reporter,
        src,
        me,
        uri or UNKNOWN,
        me.principal if (me and mtls) else UNKNOWN,
        "mutual_tls" if mtls else "none",
        (me.service if me else "") or UNKNOWN,
    )


def grpc_status_of(response: al.HTTPResponseProperties) -> str:
    """grpc-status from the trailers, or from the headers of a trailers-only reply (how errors often travel)."""
    status: str = response.response_trailers.get("grpc-status") or response.response_headers.get("grpc-status", "")
    return status


def labels_for(p: Peers, *, code: str, flags: str, protocol: str, grpc_status: str = "") -> dict[str, str]:
    service = p.service
    name, _, rest = service.partition(".")
    namespace = rest.partition(".")[0] if rest else (p.destination.namespace if p.destination else UNKNOWN)
    out = {
        "reporter": p.reporter,
        **_side("source", p.source, p.source_principal),
        **_side("destination", p.destination, p.destination_principal),
        "destination_service": service,
        "destination_service_name": name or UNKNOWN,
        "destination_service_namespace": namespace or UNKNOWN,
        "request_protocol": protocol,
        "response_code": code,
        "grpc_response_status": grpc_status,
        "response_flags": flags,
        "connection_security_policy": p.security,
    }
    return out


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.n += 1


LabelKey = tuple[tuple[str, str], ...]


class MeshMetrics:
    """Counters and histograms keyed by label set; `exposition()` is Prometheus' text format."""

    def __init__(self, directory: WorkloadDirectory | None = None) -> None:
        self.directory = directory or WorkloadDirectory()
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._histograms: dict[str, dict[LabelKey, Histogram]] = {}
        self.entries = 0  # access-log entries folded in (tests and the dashboard read it)

    # --- recording --------------------------------------------------------------------------------

    def record_http(self, entry: al.HTTPAccessLogEntry, reporter: Reporter, me: Workload | None) -> None:
        c = entry.common_properties
        headers = entry.request.request_headers
        grpc = headers.get("content-type", "").startswith("application/grpc")
        code = str(entry.response.response_code.value) if entry.response.HasField("response_code") else "0"
        grpc_status = grpc_status_of(entry.response) if grpc else ""
        labels = labels_for(
            peers(c, reporter, me, self.directory, entry.request.authority),
            code=code,
            flags=response_flags(c.response_flags),
            protocol="grpc" if grpc else "http",
            grpc_status=grpc_status,
        )
        key = tuple(labels.items())
        duration = c.time_to_last_downstream_tx_byte if c.HasField("time_to_last_downstream_tx_byte") else c.duration
        ms = duration.seconds * 1000 + duration.nanos / 1e6
        req_bytes = entry.request.request_headers_bytes + entry.request.request_body_bytes
        resp_bytes = entry.response.response_headers_bytes + entry.response.response_body_bytes
        with self._lock:
            self.entries += 1
            self._inc("istio_requests_total", key, 1)
            self._observe("istio_request_duration_milliseconds", key, ms)
            self._observe("istio_request_bytes", key, req_bytes)
            self._observe("istio_response_bytes", key, resp_bytes)

    def record_tcp(self, entry: al.TCPAccessLogEntry, reporter: Reporter, me: Workload | None) -> None:
        c = entry.common_properties
        labels = labels_for(
            peers(c, reporter, me, self.directory), code="", flags=response_flags(c.response_flags), protocol="tcp"
        )
        key = tuple((k, v) for k, v in labels.items() if k in TCP_LABELS)
        props = entry.connection_properties
        with self._lock:
            self.entries += 1
            self._inc("istio_tcp_received_bytes_total", key, props.received_bytes)
            self._inc("istio_tcp_sent_bytes_total", key, props.sent_bytes)
            if not c.intermediate_log_entry:
                self._inc("istio_tcp_connections_opened_total", key, 1)
                self._inc("istio_tcp_connections_closed_total", key, 1)

    def _inc(self, name: str, key: LabelKey, value: float) -> None:
        series = self._counters.setdefault(name, {})
        series[key] = series.get(key, 0) + value

    def _observe(self, name: str, key: LabelKey, value: float) -> None:
        self._histograms.setdefault(name, {}).setdefault(key, Histogram()).observe(value)

    # --- reading ----------------------------------------------------------------------------------

    def counter(self, name: str, **match: str) -> float:
        with self._lock:
            return sum(v for k, v in self._counters.get(name, {}).items() if _matches(k, match))

    def exposition(self) -> str:
        with self._lock:
            counters = {n: dict(s) for n, s in self._counters.items()}
            hists = {n: {k: (list(h.counts), h.total, h.n) for k, h in s.items()} for n, s in self._histograms.items()}
        lines: list[str] = []
        for name in sorted(counters):
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} counter"]
            lines += [f"{name}{_fmt(k)} {_num(v)}" for k, v in sorted(counters[name].items())]
        for name in sorted(hists):
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} histogram"]
            for k, (counts, total, n) in sorted(hists[name].items()):
                running = 0
                for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                    running += count
                    le = "+Inf" if bound == float("inf") else _num(bound)
                    lines.append(f"{name}_bucket{_fmt(k, ('le', le))} {running}")
                lines.append(f"{name}_sum{_fmt(k)} {_num(total)}")
                lines.append(f"{name}_count{_fmt(k)} {n}")
        return "\n".join(lines) + "\n"


HELP: Mapping[str, str] = {
    "istio_requests_total": "Requests seen by the reporting proxy (from its access log).",
    "istio_request_duration_milliseconds": "Request duration, first byte in to last byte out at the reporter.",
    "istio_request_bytes": "Request size: headers plus body.",
    "istio_response_bytes": "Response size: headers plus body.",
    "istio_tcp_received_bytes_total": "Bytes received on TCP connections.",
    "istio_tcp_sent_bytes_total": "Bytes sent on TCP connections.",
    "istio_tcp_connections_opened_total": "TCP connections opened.",
    "istio_tcp_connections_closed_total": "TCP connections closed.",
}


def _matches(key: LabelKey, match: Mapping[str, str]) -> bool:
    d = dict(key)
    return all(d.get(k) == v for k, v in match.items())


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(key: Iterable[tuple[str, str]], *extra: tuple[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in (*key, *extra)) + "}"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))

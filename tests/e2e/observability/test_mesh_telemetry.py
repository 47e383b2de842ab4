"""Istio's metrics, traces and dashboard on the local mesh: real Envoys, the real collector, a real Prometheus.

Every count is compared exactly with what the client saw, after a Prometheus scrape that started once the
collector had every entry (we wait on the scrape's own timestamp, not on a sleep)."""

from __future__ import annotations

import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.api import HTTPRoute, MeshConfig, VirtualService
from mesh.api import helpers as h
from mesh.compile import build_policies
from mesh.dataplane import netns
from mesh.dataplane.addresses import allocate_block
from mesh.harness.stats import assert_fraction
from mesh.observability import prometheus as prom
from mesh.observability.stack import ObservabilityOptions
from mesh.observability.traces import Span, TraceStore
from mesh.targets.base import Client
from mesh.targets.local import LocalMesh, LocalOptions
from mesh.targets.local.podclient import PodClient
from mesh.targets.traffic import HttpClient
from tests.e2e.conftest import replace

pytestmark = pytest.mark.e2e

REVIEWS_BY_VERSION = (
    'sum by (destination_version) (istio_requests_total{destination_service=~"reviews.*", reporter="source"})'
)


class ObservedMesh:
    def __init__(self, config: MeshConfig, interception: str = "proxy") -> None:
        try:
            prom.prometheus_binary()
        except Exception as e:
            pytest.fail(f"{e} — .ci/run must install the Debian package `prometheus`")
        if interception == "iptables" and not (ok_why := netns.available())[0]:
            pytest.fail(
                f"transparent interception cannot run here: {ok_why[1]} (run as root; apt-get install iproute2 iptables)"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="meshops-obs-")
        block = allocate_block()
        self.mesh = LocalMesh(
            config,
            LocalOptions(
                state_dir=Path(self._tmp.name),
                ingress_host=block.gateway_ip,
                ingress_port=8080,
                loopback_block=block.b,
                observability=ObservabilityOptions(sampling=100.0, scrape_interval=1.0),
                interception=interception,  # pydantic validates the choice
            ),
            progress=lambda m: None,
        )
        try:
            self.mesh.start()
        except BaseException:
            self.stop()
            raise
        assert self.mesh.telemetry is not None
        self.prom = prom.PrometheusClient(self.mesh.telemetry.prometheus.url)
        self.traces = TraceStore(self.mesh.telemetry.layout.traces)
        self.config = config

    def ingress(self, host: str = "bookinfo.local") -> HttpClient:
        return HttpClient(self.mesh.ingress_url, host=host)

    def from_pod(self, name: str) -> Client:
        pod = next(p for p in self.mesh.registry.pods if name in (p.name, p.service))
        if self.mesh.capture is not None:  # transparent capture: from inside the pod, as its app would call
            return PodClient(self.mesh.capture.namespace(pod.name))
        return HttpClient("", proxy=f"http://{pod.ip}:15001")

    def settled(self, promql: str, expected_total: float, timeout: float = 30.0) -> float:
        """Wait until Prometheus has all `expected_total` requests of `promql`, then for one more complete scrape;
        return that scrape's time. Query at it: a later scrape that times out on a busy machine leaves stale
        markers, and an instant query at "now" would then see no series at all."""
        deadline = time.monotonic() + timeout
        while sum(v for _, v in self.prom.query(promql)) < expected_total:
            assert time.monotonic() < deadline, f"Prometheus never reached {expected_total} for {promql}"
            time.sleep(0.1)
        return self.prom.wait_for_scrape(prom.MESH_JOB, after=time.time())

    def fresh_scrape(self) -> float:
        return self.prom.wait_for_scrape(prom.MESH_JOB, after=time.time())

    def stop(self) -> None:
        if hasattr(self, "traces"):
            self.traces.close()
        self.mesh.stop()
        self._tmp.cleanup()


@pytest.fixture(scope="module")
def observed(pytestconfig: pytest.Config) -> Iterator[ObservedMesh]:
    m = ObservedMesh(build_policies("e2e"), interception=pytestconfig.getoption("--mesh-interception"))
    try:
        yield m
    finally:
        m.stop()


def _by_version(m: ObservedMesh, at: float | None = None) -> Counter[str]:
    rows = m.prom.query(REVIEWS_BY_VERSION, at=at)
    return Counter({r.get("destination_version", ""): int(v) for r, v in rows})


def test_canary_counts_in_prometheus_equal_what_the_client_saw(observed: ObservedMesh) -> None:
    before = _by_version(observed, observed.fresh_scrape())
    client = observed.ingress()
    n = 200
    seen = Counter(client.get("/productpage").call("reviews")["body"]["version"] for _ in range(n))
    at = observed.settled(REVIEWS_BY_VERSION, sum(before.values()) + n)
    after = _by_version(observed, at)
    assert after - before == seen, f"Prometheus {dict(after - before)} vs client {dict(seen)}"
    assert sum(after.values()) - sum(before.values()) == n  # nothing counted twice


def test_abort_fault_shows_as_its_code_with_flag_fi(observed: ObservedMesh) -> None:
    """30% abort on echo: false-failure <= 1e-6 for the fraction; power >= 0.99 against 20% or 40% at n=600."""
    base = observed.config
    vs = VirtualService(
        name="echo", hosts=["echo"], http=[HTTPRoute(route=[h.to("echo", "v1")], fault=h.abort(503, 30.0))]
    )
    observed.mesh.apply(replace(base, vs))
    try:
        q = 'sum by (response_code, response_flags) (istio_requests_total{destination_service=~"echo.*", reporter="source"})'

        def counts(at: float | None = None) -> Counter[tuple[str, str]]:
            rows = observed.prom.query(q, at=at)
            return Counter({(m["response_code"], m["response_flags"]): int(v) for m, v in rows})

        before = counts(observed.fresh_scrape())
        client = observed.from_pod("productpage")
        n = 600
        codes = Counter(client.get("http://echo:9080/").status for _ in range(n))
        assert set(codes) <= {200, 503}
        at = observed.settled(q, sum(before.values()) + n)
        delta = counts(at) - before
        assert delta == Counter({("503", "FI"): codes[503], ("200", "-"): codes[200]})
        assert_fraction(codes[503], n, 0.30, "aborted share")
    finally:
        observed.mesh.apply(base)


def test_strict_mtls_traffic_reports_mutual_tls_and_the_principals(observed: ObservedMesh) -> None:
    client = observed.ingress()
    for _ in range(5):
        client.get("/productpage")
    q = 'istio_requests_total{reporter="destination", destination_service="reviews.default.svc.cluster.local"}'
    at = observed.settled(q, 5)
    rows = [m for m, v in observed.prom.query(q, at=at) if v > 0]
    assert rows
    for m in rows:
        assert m["connection_security_policy"] == "mutual_tls"
        assert m["source_workload"] == "productpage-v1"
        assert m["source_principal"] == "spiffe://cluster.local/ns/default/sa/productpage"
        assert m["destination_principal"] == "spiffe://cluster.local/ns/default/sa/reviews"


SERVER, CLIENT = 2, 3  # OTLP span kinds: a proxy's inbound (and the gateway's) span, a sidecar's call out
# jason's request: gateway -> productpage -> {details, reviews v2 -> ratings}; the leaves' inbound spans end the tree
JASON_LEAVES = frozenset({"details.default", "ratings.default"})


def _missing(spans: list[Span], parent: str, leaves: frozenset[str]) -> str:
    """What the trace still lacks (empty once whole): the ingress's root span, a parent of any span, the callee's
    span of any call out, the inbound span of each leaf service. Each proxy exports its spans in its own batches, so
    a count of spans says nothing about which ones arrived."""
    ids = {s.span_id for s in spans}
    if not any(s.parent_span_id == parent for s in spans):
        return "the ingress gateway's root span"
    orphans = [f"{s.service} {s.name}" for s in spans if s.parent_span_id not in ids | {parent}]
    if orphans:
        return f"the parents of {orphans}"
    parents = {s.parent_span_id for s in spans}
    unanswered = [f"{s.service} {s.name}" for s in spans if s.kind == CLIENT and s.span_id not in parents]
    if unanswered:
        return f"the callees' spans of {unanswered}"
    absent = leaves - {s.service for s in spans if s.kind == SERVER}
    return f"the inbound spans of {sorted(absent)}" if absent else ""


def _trace(observed: ObservedMesh, headers: dict[str, str], leaves: frozenset[str]) -> tuple[str, list[Span]]:
    """One request through the ingress with a traceparent of ours; its spans once the whole tree arrived."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    reply = observed.ingress().get("/productpage", {**headers, "traceparent": f"00-{trace_id}-{parent}-01"})
    assert reply.status == 200
    deadline = time.monotonic() + 30  # Envoy's tracer flushes its batch every 5 s; more on a loaded machine
    while missing := _missing(spans := observed.traces.spans(trace_id), parent, leaves):
        assert time.monotonic() < deadline, (
            f"trace {trace_id} lacks {missing} after 30 s: {[(s.service, s.name, s.kind) for s in spans]}"
        )
        time.sleep(0.2)
    return parent, spans


def _chain(spans: list[Span], leaf: Span) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    out, s = [], leaf
    while s is not None:
        out.append(s.service)
        s = by_id.get(s.parent_span_id)  # type: ignore[assignment]
    return out[::-1]


def test_one_request_is_one_trace_with_parent_child_spans_per_hop(observed: ObservedMesh) -> None:
    # jason goes to reviews v2, which calls ratings: gateway -> productpage -> reviews -> ratings
    parent, spans = _trace(observed, {"end-user": "jason"}, JASON_LEAVES)
    roots = [s for s in spans if s.parent_span_id == parent]
    assert [r.service for r in roots] == ["istio-ingressgateway.istio-system"]
    ratings_server = [s for s in spans if s.service == "ratings.default"]
    assert len(ratings_server) == 1
    assert _chain(spans, ratings_server[0]) == [
        "istio-ingressgateway.istio-system",  # the gateway's span
        "productpage.default",  # productpage's sidecar, inbound
        "productpage.default",  # ... its call to reviews
        "reviews.default",  # reviews' sidecar, inbound
        "reviews.default",  # ... its call to ratings
        "ratings.default",  # ratings' sidecar, inbound
    ]
    assert {s.service for s in spans} >= {"details.default"}  # productpage's other call, a sibling branch


def test_an_injected_delay_shows_on_the_span_of_the_hop_where_it_fired(observed: ObservedMesh) -> None:
    base = observed.config
    vs = VirtualService(
        name="ratings", hosts=["ratings"], http=[HTTPRoute(route=[h.to("ratings", "v1")], fault=h.delay("2s"))]
    )
    observed.mesh.apply(replace(base, vs))
    try:
        _, spans = _trace(observed, {"end-user": "jason"}, JASON_LEAVES)
    finally:
        observed.mesh.apply(base)
    delayed = [s for s in spans if "DI" in str(s.attributes.get("response_flags", ""))]
    assert len(delayed) == 1, [(s.service, s.name, s.attributes) for s in spans]
    [hop] = delayed
    assert hop.service == "reviews.default"  # the fault fires in the caller's sidecar, on its call to ratings
    assert hop.duration_ms >= 1900
    [callee] = [s for s in spans if s.parent_span_id == hop.span_id]
    assert callee.service == "ratings.default" and callee.duration_ms < 1000  # ratings itself was fast


# Istio's Grafana mesh/service dashboards (manifests/addons/dashboards) and Kiali-style graph queries, with their
# template variables filled in. Each must run unchanged and return series for the traffic above.
DASHBOARD_QUERIES = {
    "mesh: global request volume": 'round(sum(rate(istio_requests_total{reporter=~"source|waypoint"}[1m])), 0.01)',
    "mesh: global success rate": 'sum(rate(istio_requests_total{reporter=~"source|waypoint", response_code!~"5.."}[1m])) '
    '/ sum(rate(istio_requests_total{reporter=~"source|waypoint"}[1m]))',
    "mesh: 4xx": 'round(sum(rate(istio_requests_total{reporter=~"source|waypoint", response_code=~"4.."}[1m])), 0.01) or vector(0)',
    "mesh: 5xx": 'round(sum(rate(istio_requests_total{reporter=~"source|waypoint", response_code=~"5.."}[1m])), 0.01) or vector(0)',
    "mesh: http workloads requests": 'label_join(sum(rate(istio_requests_total{reporter=~"source|waypoint"}[1m])) by '
    '(destination_workload, destination_workload_namespace, destination_service), "destination_workload_var", ".", '
    '"destination_workload", "destination_workload_namespace")',
    "mesh: http workloads p99": 'label_join(histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=~"source|waypoint"}[1m])) '
    'by (le, destination_workload, destination_workload_namespace)), "destination_workload_var", ".", '
    '"destination_workload", "destination_workload_namespace")',
    "service: request volume": 'round(sum(irate(istio_requests_total{reporter=~"destination", destination_service=~"reviews.default.svc.cluster.local"}[5m])), 0.001)',
    "service: success rate": 'sum(irate(istio_requests_total{reporter=~"destination", destination_service=~"reviews.default.svc.cluster.local", response_code!~"5.*"}[5m])) '
    '/ sum(irate(istio_requests_total{reporter=~"destination", destination_service=~"reviews.default.svc.cluster.local"}[5m]))',
    "service: client workloads": 'sum(istio_requests_total{reporter=~"destination", destination_service=~"reviews.default.svc.cluster.local"}) by (source_workload)',
    "kiali: graph edges": 'sum(rate(istio_requests_total{reporter="destination", destination_service_namespace="default"}[1m])) by '
    "(source_cluster, source_workload_namespace, source_workload, source_canonical_service, source_canonical_revision, "
    "destination_cluster, destination_service_namespace, destination_service, destination_service_name, "
    "destination_workload_namespace, destination_workload, destination_canonical_service, destination_canonical_revision, "
    "request_protocol, response_code, grpc_response_status, response_flags) > 0",
    "kiali: security": 'sum(rate(istio_requests_total{reporter="destination", destination_service_namespace="default"}[1m])) by '
    "(source_workload_namespace, source_workload, destination_service_namespace, destination_service_name, "
    "destination_workload_namespace, destination_workload, connection_security_policy) > 0",
    "kiali: response time": 'histogram_quantile(0.95, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination", '
    'destination_service_namespace="default"}[1m])) by (le, source_workload, destination_workload))',
}


def test_istio_dashboard_and_kiali_queries_run_unchanged(observed: ObservedMesh) -> None:
    client = observed.ingress()
    t0 = time.time()
    for _ in range(20):
        client.get("/productpage")
    observed.prom.wait_for_scrape(prom.MESH_JOB, after=t0 + 1.5)  # rate() needs two samples after the traffic
    empty = [name for name, q in DASHBOARD_QUERIES.items() if not observed.prom.query(q)]
    assert not empty, f"queries with no series: {empty}"

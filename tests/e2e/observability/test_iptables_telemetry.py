"""Telemetry from sidecars inside pods (transparent capture, a network namespace per pod): their access logs become
Istio's metrics and their spans join the trace, as under HTTP_PROXY. The collector listens on the run's bridge, the
one address pods reach; the whole telemetry suite runs this way with `--mesh-interception iptables`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from mesh.compile import build_policies
from mesh.observability import prometheus as prom
from mesh.observability.workloads import workload_name
from tests.e2e.observability.test_mesh_telemetry import (
    JASON_LEAVES,
    REVIEWS_BY_VERSION,
    SERVER,
    ObservedMesh,
    _trace,
)

pytestmark = pytest.mark.e2e
REPORTERS = ("source", "destination")


def _reviews_by_version(reporter: str) -> str:
    return REVIEWS_BY_VERSION.replace('reporter="source"', f'reporter="{reporter}"')


def _by_version(m: ObservedMesh, at: float, reporter: str) -> Counter[str]:
    rows = m.prom.query(_reviews_by_version(reporter), at=at)
    return Counter({r.get("destination_version", ""): int(v) for r, v in rows})


@pytest.fixture(scope="module")
def captured() -> Iterator[ObservedMesh]:
    m = ObservedMesh(build_policies("e2e"), interception="iptables")
    try:
        yield m
    finally:
        m.stop()


def test_the_collector_listens_only_on_the_runs_bridge(captured: ObservedMesh) -> None:
    assert captured.mesh.capture is not None and captured.mesh.telemetry is not None
    assert captured.mesh.telemetry.ip == captured.mesh.capture.host_ip


def test_prometheus_scrapes_every_sidecar_inside_its_pod(captured: ObservedMesh) -> None:
    """Envoy's own stats, from each sidecar's read-only admin port on its pod address (a port the capture leaves
    alone, as Istio's 15090): every pod's target is up."""
    pods = {p.ip for p in captured.mesh.registry.pods}
    deadline = time.monotonic() + 30
    while True:
        envoy = [t for t in captured.prom.targets() if t["labels"].get("job") == prom.ENVOY_JOB]
        up = {urlsplit(t["scrapeUrl"]).hostname for t in envoy if t["health"] == "up"}
        if pods <= up:
            return
        down = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in envoy if t["health"] != "up"]
        assert time.monotonic() < deadline, f"pods not scraped: {sorted(pods - up)}; {down}"
        time.sleep(0.2)


def test_access_logs_from_inside_pods_become_metrics(captured: ObservedMesh) -> None:
    """Both reports of each call to reviews, exactly once each: productpage's sidecar (source) and reviews' own
    (destination), each inside its pod."""
    at = captured.fresh_scrape()
    before = {reporter: _by_version(captured, at, reporter) for reporter in REPORTERS}
    client = captured.ingress()
    n = 40
    seen = Counter(client.get("/productpage").call("reviews")["body"]["version"] for _ in range(n))
    for reporter in REPORTERS:
        at = captured.settled(_reviews_by_version(reporter), sum(before[reporter].values()) + n)
        assert _by_version(captured, at, reporter) - before[reporter] == seen, reporter


def test_spans_from_inside_pods_join_the_ingress_trace(captured: ObservedMesh) -> None:
    _, spans = _trace(captured, {"end-user": "jason"}, JASON_LEAVES)
    inbound = {s.service for s in spans if s.kind == SERVER}
    assert inbound >= {"productpage.default", "reviews.default", *JASON_LEAVES}


def test_the_gateway_is_the_source_of_what_it_sends_into_the_pods(captured: ObservedMesh) -> None:
    """The gateway reaches pods from the host's bridge address, which names no workload: its mTLS identity does."""
    for _ in range(5):
        assert captured.ingress().get("/productpage").status == 200
    q = 'istio_requests_total{reporter="destination", destination_workload="productpage-v1"}'
    at = captured.settled(q, 5)
    sources = {m["source_workload"] for m, v in captured.prom.query(q, at=at) if v > 0}
    assert captured.mesh.gateway is not None
    assert sources == {workload_name(captured.mesh.gateway.name)}

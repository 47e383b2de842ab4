"""The dashboard's server: token required, loopback only, sections degrade to a message when a source is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from mesh.observability.dashboard import Dashboard, Edge, Sources, WeightedRoute, graph_svg, layout, waterfall
from mesh.observability.traces import Span, TraceStore


def test_requests_without_the_token_are_refused_and_the_token_becomes_a_cookie(tmp_path: Path) -> None:
    src = Sources(
        traces=TraceStore(tmp_path / "t.db"),
        proxy_status=lambda: [{"proxy": "reviews-v1-0.default", "status": "SYNCED"}],
        weighted_routes=lambda: [WeightedRoute("default/reviews#0", "reviews.default.svc.cluster.local", {"v1": 50})],
    )
    d = Dashboard(src, token="s3cret").start()
    try:
        s = requests.Session()
        s.trust_env = False
        base = f"http://127.0.0.1:{d.port}/"
        assert s.get(base, timeout=2).status_code == 401
        assert s.get(base + "?token=wrong", timeout=2).status_code == 401
        r = s.get(d.url, timeout=2)  # follows the 303, now with the cookie
        assert r.status_code == 200 and "token" not in r.url
        assert "reviews-v1-0.default" in r.text and "SYNCED" in r.text
        assert "Prometheus not available" in r.text and "No traces yet" in r.text
        assert s.get(base, headers={"authorization": "Bearer s3cret"}, timeout=2).status_code == 200
    finally:
        d.stop()


def test_the_dashboard_refuses_a_non_loopback_address() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Dashboard(Sources(), token="x", host="0.0.0.0")


def test_graph_lays_callers_left_of_callees_and_marks_mtls_edges() -> None:
    edges = [Edge("istio-ingressgateway", "productpage-v1", 10, mtls="unknown"),
             Edge("productpage-v1", "reviews-v1", 6, mtls="mutual_tls")]  # fmt: skip
    pos = layout(edges)
    assert pos["istio-ingressgateway"][0] < pos["productpage-v1"][0] < pos["reviews-v1"][0]
    svg = graph_svg(edges)
    assert svg.count('class="edge"') == 2 and ">p99 - · mTLS<" in svg and 'data-total="6"' in svg


def test_waterfall_draws_every_span_with_its_duration() -> None:
    spans = [Span("t", "a", "", "gw", "root", 2, 0, 2_000_000_000, 0, {}),
             Span("t", "b", "a", "reviews", "ratings", 3, 1_000, 1_999_000_000, 0, {"response_flags": "DI"})]  # fmt: skip
    svg = waterfall(spans)
    assert svg.count('class="span"') == 2 and "DI" in svg and "2000 ms" in svg

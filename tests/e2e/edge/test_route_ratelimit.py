"""Route-scoped rate limits on real Envoys: a RateLimit on one gateway route (selected by host and path) answers 429
with `x-envoy-ratelimited` beyond that route's bucket while another route on the same host is never limited;
requests are bucketed per `x-user` value; the route limit's own stats count exactly the 429s."""

from __future__ import annotations

import pytest

from mesh.api import RateLimit, RateLimitDescriptor, RouteSelector, TokenBucket
from mesh.api.config import MeshConfig
from mesh.api.networking import WorkloadSelector
from mesh.api.ratelimit import RATELIMITED_HEADER
from mesh.targets.local import LocalMesh

from .conftest import burst, check_limited

pytestmark = pytest.mark.e2e

ROUTE_BUCKET, USER_BUCKET, INTERVAL, SENT = 5, 3, 60.0, 15


def test_a_limited_route_answers_429_per_bucket_while_its_sibling_route_never_is(e2e_mesh: LocalMesh) -> None:
    pages, static = f"{e2e_mesh.ingress_url}/productpage", f"{e2e_mesh.ingress_url}/static/app.css"
    assert [r.status_code for r in burst(static, 3)[0]] == [200] * 3  # the sibling route answers

    per_fill = {"fill_interval": f"{INTERVAL:.0f}s"}
    limit = RateLimit(
        name="pages",
        namespace="istio-system",
        workload_selector=WorkloadSelector(match_labels={"istio": "ingressgateway"}),
        token_bucket=TokenBucket(max_tokens=ROUTE_BUCKET, **per_fill),
        routes=[RouteSelector(host="bookinfo.local", path="/productpage")],
        descriptors=[
            RateLimitDescriptor(header="x-user", token_bucket=TokenBucket(max_tokens=USER_BUCKET, **per_fill))
        ],
    )
    e2e_mesh.apply(MeshConfig(services=list(e2e_mesh.config.services), resources=[*e2e_mesh.config.resources, limit]))

    limited = check_limited(*burst(pages, SENT), ROUTE_BUCKET, INTERVAL)  # no x-user: the route's own bucket
    sibling, _ = burst(static, SENT)
    assert [r.status_code for r in sibling] == [200] * SENT  # same host, another route: never limited
    assert not any(RATELIMITED_HEADER in r.headers for r in sibling)
    # one bucket per x-user value, apart from the route's exhausted bucket and from each other
    limited += check_limited(*burst(pages, SENT, **{"x-user": "alice"}), USER_BUCKET, INTERVAL)
    limited += check_limited(*burst(pages, SENT, **{"x-user": "bob"}), USER_BUCKET, INTERVAL)

    assert e2e_mesh.gateway is not None
    prefix = limit.stat_prefix
    stats = e2e_mesh.admin(e2e_mesh.gateway).stats(prefix)
    assert stats.get(f"{prefix}.http_local_rate_limit.rate_limited") == limited, stats

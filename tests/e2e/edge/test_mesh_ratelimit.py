"""Local rate limiting in the mesh on real Envoys: a RateLimit on the ingress gateway answers 429 with
`x-envoy-ratelimited` beyond its token bucket, counted in the proxy's `local_rate_limit` stats."""

from __future__ import annotations

import pytest

from mesh.api import RateLimit, TokenBucket
from mesh.api.config import MeshConfig
from mesh.api.networking import WorkloadSelector
from mesh.api.ratelimit import STAT_PREFIX
from mesh.targets.local import LocalMesh

from .conftest import burst, check_limited

pytestmark = pytest.mark.e2e

BUCKET, INTERVAL, SENT = 10, 60.0, 30


def test_gateway_rate_limit_answers_429_beyond_the_bucket(e2e_mesh: LocalMesh) -> None:
    url = f"{e2e_mesh.ingress_url}/productpage"
    before, _ = burst(url, SENT)
    assert [r.status_code for r in before] == [200] * SENT  # no limit yet: nothing limited

    limit = RateLimit(
        name="ingress",
        namespace="istio-system",
        workload_selector=WorkloadSelector(match_labels={"istio": "ingressgateway"}),
        token_bucket=TokenBucket(max_tokens=BUCKET, tokens_per_fill=BUCKET, fill_interval=f"{INTERVAL:.0f}s"),
    )
    e2e_mesh.apply(MeshConfig(services=list(e2e_mesh.config.services), resources=[*e2e_mesh.config.resources, limit]))
    limited = check_limited(*burst(url, SENT), BUCKET, INTERVAL)
    assert e2e_mesh.gateway is not None
    stats = e2e_mesh.admin(e2e_mesh.gateway).stats(STAT_PREFIX)
    assert stats.get(f"{STAT_PREFIX}.http_local_rate_limit.rate_limited") == limited, stats

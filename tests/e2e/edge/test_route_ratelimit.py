"""Route-scoped rate limits on real Envoys: a RateLimit on one gateway route (selected by host and path) answers 429
with `x-envoy-ratelimited` beyond that route's bucket while another route on the same host is never limited;
requests are bucketed per `x-user` value; the route limit's own stats count exactly the 429s."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mesh.api import RateLimit, RateLimitDescriptor, RouteSelector, TokenBucket
from mesh.api.config import MeshConfig
from mesh.api.networking import WorkloadSelector
from mesh.api.ratelimit import RATELIMITED_HEADER
from mesh.compile import build_policies
from mesh.dataplane.addresses import allocate_block
from mesh.targets.local import LocalMesh, LocalOptions

pytestmark = pytest.mark.e2e

ROUTE_BUCKET, USER_BUCKET, INTERVAL, SENT = 5, 3, 60.0, 15


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    block = allocate_block()
    opts = LocalOptions(state_dir=tmp_path, ingress_host=block.gateway_ip, ingress_port=8080, loopback_block=block.b)
    lm = LocalMesh(build_policies("e2e"), opts, progress=lambda m: None)
    try:
        lm.start()
        yield lm
    finally:
        lm.stop()


def _burst(url: str, n: int, **headers: str) -> tuple[list[requests.Response], float]:
    session = requests.Session()
    session.trust_env = False
    t0 = time.monotonic()
    out = [session.get(url, headers={"Host": "bookinfo.local", **headers}, timeout=10) for _ in range(n)]
    return out, time.monotonic() - t0


def _check_limited(answers: list[requests.Response], took: float, bucket: int) -> int:
    """The bucket starts full (its first `bucket` requests pass); refills during the burst add at most `bucket` per
    started interval (+1 for a continuous refill's rounding): a deterministic bound, no statistics. Returns the 429s."""
    passed = sum(r.status_code == 200 for r in answers)
    limited = [r for r in answers if r.status_code == 429]
    assert bucket <= passed <= bucket + bucket * math.ceil(took / INTERVAL) + 1, (passed, took)
    assert passed + len(limited) == len(answers), [r.status_code for r in answers]
    assert all(r.status_code == 200 for r in answers[:bucket])
    assert all(r.headers.get(RATELIMITED_HEADER) == "true" for r in limited)
    return len(limited)


def test_a_limited_route_answers_429_per_bucket_while_its_sibling_route_never_is(mesh: LocalMesh) -> None:
    pages, static = f"{mesh.ingress_url}/productpage", f"{mesh.ingress_url}/static/app.css"
    assert [r.status_code for r in _burst(static, 3)[0]] == [200] * 3  # the sibling route answers

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
    mesh.apply(MeshConfig(services=list(mesh.config.services), resources=[*mesh.config.resources, limit]))

    limited = _check_limited(*_burst(pages, SENT), ROUTE_BUCKET)  # no x-user: the route's own bucket
    sibling, _ = _burst(static, SENT)
    assert [r.status_code for r in sibling] == [200] * SENT  # same host, another route: never limited
    assert not any(RATELIMITED_HEADER in r.headers for r in sibling)
    # one bucket per x-user value, apart from the route's exhausted bucket and from each other
    limited += _check_limited(*_burst(pages, SENT, **{"x-user": "alice"}), USER_BUCKET)
    limited += _check_limited(*_burst(pages, SENT, **{"x-user": "bob"}), USER_BUCKET)

    assert mesh.gateway is not None
    prefix = limit.stat_prefix
    stats = mesh.admin(mesh.gateway).stats(prefix)
    assert stats.get(f"{prefix}.http_local_rate_limit.rate_limited") == limited, stats

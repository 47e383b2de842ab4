"""Local rate limiting in the mesh on real Envoys: a RateLimit on the ingress gateway answers 429 with
`x-envoy-ratelimited` beyond its token bucket, counted in the proxy's `local_rate_limit` stats."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mesh.api import RateLimit, TokenBucket
from mesh.api.config import MeshConfig
from mesh.api.networking import WorkloadSelector
from mesh.api.ratelimit import RATELIMITED_HEADER, STAT_PREFIX
from mesh.compile import build_policies
from mesh.dataplane.addresses import allocate_block
from mesh.targets.local import LocalMesh, LocalOptions

pytestmark = pytest.mark.e2e

BUCKET, INTERVAL, SENT = 10, 60.0, 30


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


def _burst(url: str, n: int) -> tuple[list[requests.Response], float]:
    session = requests.Session()
    session.trust_env = False
    t0 = time.monotonic()
    out = [session.get(url, headers={"Host": "bookinfo.local"}, timeout=10) for _ in range(n)]
    return out, time.monotonic() - t0


def test_gateway_rate_limit_answers_429_beyond_the_bucket(mesh: LocalMesh) -> None:
    url = f"{mesh.ingress_url}/productpage"
    before, _ = _burst(url, SENT)
    assert [r.status_code for r in before] == [200] * SENT  # no limit yet: nothing limited

    limit = RateLimit(
        name="ingress",
        namespace="istio-system",
        workload_selector=WorkloadSelector(match_labels={"istio": "ingressgateway"}),
        token_bucket=TokenBucket(max_tokens=BUCKET, tokens_per_fill=BUCKET, fill_interval=f"{INTERVAL:.0f}s"),
    )
    mesh.apply(MeshConfig(services=list(mesh.config.services), resources=[*mesh.config.resources, limit]))
    answers, took = _burst(url, SENT)
    passed = sum(r.status_code == 200 for r in answers)
    limited = [r for r in answers if r.status_code == 429]
    # the bucket starts full (>= BUCKET pass); refills within the burst add at most BUCKET per started interval
    # (+1 for a continuous refill's rounding): a deterministic bound, no statistics
    assert BUCKET <= passed <= BUCKET + BUCKET * math.ceil(took / INTERVAL) + 1, (passed, took)
    assert passed + len(limited) == SENT, [r.status_code for r in answers]
    assert all(r.headers.get(RATELIMITED_HEADER) == "true" for r in limited)
    assert all(r.status_code == 200 for r in answers[:BUCKET])
    assert mesh.gateway is not None
    stats = mesh.admin(mesh.gateway).stats(STAT_PREFIX)
    assert stats.get(f"{STAT_PREFIX}.http_local_rate_limit.rate_limited") == len(limited), stats

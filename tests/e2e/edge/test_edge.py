"""What clients of the edge observe: no failed request when a replica dies or the policy changes, HTTP/2 over TLS,
their own address at the application, and 429s exactly beyond the configured rate."""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

from mesh.api.edge import Edge, EdgeListener, EdgeTimeouts, EdgeTLS, Rate, RateLimits
from mesh.edge import EdgeConfigRejected, EdgeTier
from mesh.edge.testing import Gateways, Load, free_port

pytestmark = pytest.mark.e2e


def _edge(**fields: object) -> Edge:
    listeners = fields.pop("listeners", None) or [EdgeListener(name="http", port=free_port())]
    return Edge(name="edge", listeners=listeners, **fields)


@pytest.fixture
def tier(tmp_path: Path, replicas: Gateways, credentials: Path) -> Iterator[EdgeTier]:
    t = EdgeTier(_edge(), replicas.replicas, tmp_path / "edge", credentials)
    with t:
        _wait_all_up(t)
        yield t


def _wait_all_up(t: EdgeTier, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = t.runtime.servers("gateways")
        if states and all(s.status == "UP" for s in states.values()):
            return
        time.sleep(0.05)
    raise AssertionError(f"replicas not all UP after {timeout}s: {t.runtime.servers('gateways')}")


def _session(source: str) -> requests.Session:
    """A client whose connections come from `source` (a loopback address of its own)."""
    s = requests.Session()
    s.trust_env = False
    adapter = requests.adapters.HTTPAdapter()
    adapter.init_poolmanager(10, 10, source_address=(source, 0))
    s.mount("http://", adapter)
    return s


def test_sigkill_of_a_replica_under_load_fails_no_request(tier: EdgeTier, replicas: Gateways) -> None:
    victim = replicas.replicas[1]
    before = next(s for s in replicas.supervisor.status() if s["name"] == replicas.process(victim))["restarts"]
    with Load(tier.url(), workers=4) as load:
        load.wait_for(300)
        replicas.supervisor.kill(replicas.process(victim))
        load.wait_for(300)
        deadline = time.monotonic() + 20
        while (
            next(s for s in replicas.supervisor.status() if s["name"] == replicas.process(victim))["restarts"] == before
            or tier.runtime.servers("gateways")[victim.name].status != "UP"
        ):
            assert time.monotonic() < deadline, "the killed replica never came back UP"
            time.sleep(0.05)
        served_before = tier.runtime.servers("gateways")[victim.name].requests
        load.wait_for(300)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors[:5])
    assert load.result.total >= 900
    # HAProxy took the restarted replica back
    assert tier.runtime.servers("gateways")[victim.name].requests > served_before


def test_policy_reload_under_load_fails_no_request(tier: EdgeTier) -> None:
    workers_seen = set(tier.runtime.workers())
    with Load(tier.url(), workers=4) as load:
        load.wait_for(200)
        for i in range(5):
            tier.apply(tier.edge.model_copy(update={"timeouts": EdgeTimeouts(server=f"{30 + i}s")}))
            new = set(tier.runtime.workers())
            assert new and not new & workers_seen, "the reload did not start a new worker"
            workers_seen |= new
            load.wait_for(100)
    assert load.result.failed == 0, (load.result.statuses, load.result.errors[:5])
    assert "timeout server 34000ms" in tier.config_path.read_text()


def test_a_rejected_policy_leaves_the_running_edge_serving(tier: EdgeTier, credentials: Path) -> None:
    broken = credentials / "broken-cert"
    broken.mkdir(exist_ok=True)
    (broken / "tls.crt").write_text("not a certificate\n")
    (broken / "tls.key").write_text("not a key\n")
    listeners = [
        *tier.edge.listeners,
        EdgeListener(name="https", port=free_port(), tls=EdgeTLS(credential="broken-cert")),
    ]
    workers = tier.runtime.workers()
    with pytest.raises(EdgeConfigRejected, match="broken-cert"):
        tier.apply(tier.edge.model_copy(update={"listeners": listeners}))
    assert tier.runtime.workers() == workers
    assert requests.get(tier.url(), timeout=5).status_code == 200


def test_tls_terminates_with_http2_by_alpn_and_the_app_sees_the_client(
    tmp_path: Path, replicas: Gateways, credentials: Path
) -> None:
    edge = _edge(listeners=[EdgeListener(name="https", port=free_port(), tls=EdgeTLS(credential="edge-cert"))])
    with EdgeTier(edge, replicas.replicas, tmp_path / "edge", credentials) as t:
        _wait_all_up(t)
        ctx = ssl.create_default_context(cafile=str(credentials / "ca.crt"))
        transport = httpx.HTTPTransport(verify=ctx, http2=True, local_address="127.0.0.77")
        with httpx.Client(transport=transport, http2=True) as client:
            r = client.get(t.url() + "/whoami")
            r1 = httpx.get(t.url(), verify=ctx)  # an HTTP/1.1-only client still gets through
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    assert r1.status_code == 200 and r1.http_version == "HTTP/1.1"
    seen = r.json()["headers"]
    assert seen["x-forwarded-for"].split(",")[0] == "127.0.0.77"
    assert seen["x-envoy-external-address"] == "127.0.0.77"  # the gateway trusts the edge's one hop
    assert seen["x-forwarded-proto"] == "https"


def test_requests_beyond_the_client_rate_get_429_and_only_those(
    tmp_path: Path, replicas: Gateways, credentials: Path
) -> None:
    """A burst of 3x the limit from one client: exactly `limit` pass, up to the window's slack.

    HAProxy's rate is the current window's count plus the previous window's, weighted by the part of it still inside
    the sliding window. Every request of a burst shorter than the period lies inside the window, so the estimate never
    exceeds the true count (at least `limit` pass) and undercounts by at most limit * burst/period if the burst
    straddles a window boundary. The bound is deterministic: no false failures, no statistics needed.
    """
    limit, period = 20, 10.0
    edge = _edge(rate_limits=RateLimits(per_client=Rate(requests=limit, period=f"{period:.0f}s")))
    with EdgeTier(edge, replicas.replicas, tmp_path / "edge", credentials) as t:
        _wait_all_up(t)
        hammer, neighbour = _session("127.0.0.91"), _session("127.0.0.92")
        t0 = time.monotonic()
        codes = [hammer.get(t.url(), timeout=5).status_code for _ in range(3 * limit)]
        burst = time.monotonic() - t0
        calm = [neighbour.get(t.url(), timeout=5).status_code for _ in range(limit // 2)]
        denied = t.runtime.frontends()["http"].denied
    assert burst < period / 2, f"the burst took {burst:.1f}s: too slow to measure a {period}s window"
    passed = codes.count(200)
    slack = math.ceil(limit * burst / period) + 1
    assert set(codes) <= {200, 429}
    assert limit <= passed <= limit + slack, (passed, burst)
    assert codes[:limit] == [200] * limit  # the first `limit` are never limited
    assert calm == [200] * (limit // 2)  # another client's budget is its own
    assert denied == codes.count(429)


def test_traffic_under_the_rate_is_never_limited_and_hosts_have_their_own_budget(
    tmp_path: Path, replicas: Gateways, credentials: Path
) -> None:
    per_host = 30
    edge = _edge(
        rate_limits=RateLimits(
            per_client=Rate(requests=20, period="1s"), per_host=Rate(requests=per_host, period="10s")
        )
    )
    with EdgeTier(edge, replicas.replicas, tmp_path / "edge", credentials) as t:
        _wait_all_up(t)
        # paced at 8/s for 3 s (three full windows): at most 9 in any 1 s window, well under 20
        paced = _session("127.0.0.93")
        codes = []
        start = time.monotonic()
        for i in range(24):
            time.sleep(max(0.0, start + i / 8 - time.monotonic()))
            codes.append(paced.get(t.url(), headers={"Host": "calm.example"}, timeout=5).status_code)
        assert codes == [200] * 24
        # ten clients, each under its own limit, together hammer one host: the host's budget caps them
        clients = [_session(f"127.0.0.{100 + k}") for k in range(10)]
        t0 = time.monotonic()
        busy = [
            c.get(t.url(), headers={"Host": "busy.example"}, timeout=5).status_code for c in clients for _ in range(6)
        ]
        burst = time.monotonic() - t0
        other = [clients[0].get(t.url(), headers={"Host": "other.example"}, timeout=5).status_code]
    assert burst < 5.0, f"the burst took {burst:.1f}s: too slow to measure a 10s window"
    assert per_host <= busy.count(200) <= per_host + math.ceil(per_host * burst / 10) + 1, (busy.count(200), burst)
    assert busy.count(200) + busy.count(429) == len(busy)
    assert other == [200]

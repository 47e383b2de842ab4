"""Which Edge a local mesh runs, the replicas' addresses, and what `mesh status` reads of ACME credentials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh.api import Edge, EdgeListener, HealthCheck
from mesh.api.config import MeshConfig
from mesh.controlplane.ca.acme_status import read_status
from mesh.edge import local
from mesh.edge.errors import EdgePolicyError
from mesh.errors import UsageError
from mesh.runtime import gateway_proxy
from mesh.targets.local import LocalMesh, LocalOptions


def test_default_edge_is_plain_http_on_the_ingress_port_checking_the_admin_readiness() -> None:
    edge = local.edge_policy(MeshConfig(), "127.9.0.1", 8080)
    assert [(x.address, x.port, x.tls) for x in edge.listeners] == [("127.9.0.1", 8080, None)]
    assert edge.health_check.path == "/ready"


def test_the_policies_edge_wins_and_a_custom_health_path_is_kept() -> None:
    mine = Edge(name="public", listeners=[EdgeListener(name="web", port=9000)], health_check=HealthCheck(path="/x"))
    assert local.edge_policy(MeshConfig(resources=[mine]), "127.0.0.1", 8080) == mine


def test_two_edges_are_refused() -> None:
    a = Edge(name="a", listeners=[EdgeListener(name="web", port=9000)])
    with pytest.raises(EdgePolicyError, match="one edge"):
        local.edge_policy(MeshConfig(resources=[a, a.model_copy(update={"name": "b"})]), "127.0.0.1", 8080)


def test_replicas_have_distinct_addresses_and_are_checked_on_the_admin_port() -> None:
    ips = [local.replica_ip(42, i) for i in range(3)]
    assert ips == ["127.42.0.1", "127.42.0.11", "127.42.0.12"]
    gws = [gateway_proxy(ip, {80: (ip, 8080)}, local.replica_name(i)) for i, ip in enumerate(ips)]
    reps = local.replicas(gws)
    assert [(r.name, r.host, r.port, r.health_port) for r in reps][1] == ("istio-ingressgateway-1", ips[1], 8080, 15000)
    # behind the edge no replica listens on the gateway's address, which the edge may hold (SO_REUSEPORT would
    # let both bind it and split clients between them)
    listen = [local.replica_listen_ip(42, i) for i in range(3)]
    assert "127.42.0.1" not in listen and len(set(listen)) == 3
    # the health check asks the admin port on the proxy's own address even where its listeners bind another
    behind = [gateway_proxy(ip, {80: (at, 8080)}) for ip, at in zip(ips, listen, strict=True)]
    (first, *_) = local.replicas(behind)
    assert (first.host, first.health_host) == ("127.42.0.10", "127.42.0.1")


def test_acme_status_reads_last_renewal_and_error(tmp_path: Path) -> None:
    assert read_status(tmp_path / "missing.json") == []
    path = tmp_path / "acme-status.json"
    cert = {"name": "shop", "hosts": ["shop.test"], "ready": True, "last_success": "t1", "error": "down", "issued": 2}
    path.write_text(json.dumps({"issuer": "pebble", "certificates": {"shop": cert}}))
    (status,) = read_status(path)
    assert (status.issuer, status.name, status.ready, status.last_success, status.error) == (
        "pebble",
        "shop",
        True,
        "t1",
        "down",
    )


def test_gateway_replicas_without_an_edge_are_refused_before_anything_starts(tmp_path: Path) -> None:
    """Nothing would balance N replicas locally without the edge: `mesh up` says so and what to do (exit 2), and
    leaves no state behind (no process started, no state file)."""
    from click.testing import CliRunner

    from mesh.cli import cli, meshcmds  # noqa: F401  (registers `up`)

    state = tmp_path / "state"
    r = CliRunner().invoke(cli, ["up", "--gateway-replicas", "3", "--state-dir", str(state)])
    assert r.exit_code == 2, r.output
    assert "--gateway-replicas 3 without --edge" in r.output and "--edge haproxy" in r.output
    assert not (state / "mesh.json").exists() and not (state / "run").exists()
    LocalOptions(gateway_replicas=3, edge="haproxy").check()  # behind the edge: accepted
    LocalOptions(gateway_replicas=1).check()
    with pytest.raises(UsageError, match="nothing would balance"):
        LocalMesh(MeshConfig(), LocalOptions(state_dir=state, gateway_replicas=2)).start()


def test_several_replicas_under_a_gateway_rate_limit_are_noted_as_several_buckets() -> None:
    from mesh.api import RateLimit, TokenBucket, WorkloadSelector

    limit = RateLimit(
        name="ingress",
        namespace="istio-system",
        workload_selector=WorkloadSelector(match_labels={"istio": "ingressgateway"}),
        token_bucket=TokenBucket(max_tokens=10),
    )
    other = RateLimit(name="cart", namespace="shop", token_bucket=TokenBucket(max_tokens=10))  # no gateway here
    config = MeshConfig(resources=[limit, other])
    three = [gateway_proxy(local.replica_ip(42, i), {80: ("127.0.0.1", 8080)}, local.replica_name(i)) for i in range(3)]
    (note,) = local.per_replica_limits(config, three)
    assert note.startswith("RateLimit istio-system/ingress: each of the 3 gateway replicas has its own bucket")
    assert "Edge.rate_limits" in note
    assert local.per_replica_limits(config, three[:1]) == []

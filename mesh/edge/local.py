"""The edge inside a local mesh: which `Edge` policy runs, on which addresses the gateway replicas listen, and what
`mesh status` shows of it. Pure functions; `LocalMesh` runs the result under its own supervisor."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mesh.api.config import MeshConfig
from mesh.api.edge import Edge, EdgeListener
from mesh.api.ratelimit import RateLimit
from mesh.edge.config import BACKEND, Replica
from mesh.edge.errors import EdgePolicyError
from mesh.edge.haproxy import Runtime
from mesh.runtime import GATEWAY_NAMESPACE, SIDECAR_ADMIN_PORT, Proxy

# Istio's gateway answers readiness at :15021/healthz/ready; the local gateway's readiness is its admin's /ready
ISTIO_READINESS_PATH = "/healthz/ready"
LOCAL_READINESS_PATH = "/ready"


def replica_ip(block: int, index: int) -> str:
    """Replica 0 keeps the gateway's address; the others sit in the same /16 (127.B.0.11 and up)."""
    return f"127.{block}.0.1" if index == 0 else f"127.{block}.0.{10 + index}"


def replica_listen_ip(block: int, index: int) -> str:
    """Where replica `index` listens behind the edge: never the gateway's address, which the edge may hold (`mesh up
    --ingress-host` on it). Envoy and HAProxy both bind with SO_REUSEPORT, so a shared address and port would not
    fail: the kernel would quietly hand some clients to a replica directly, around the edge's limits and TLS."""
    return f"127.{block}.0.{10 + index}"


def replica_name(index: int) -> str:
    return "istio-ingressgateway" if index == 0 else f"istio-ingressgateway-{index}"


def edge_policy(config: MeshConfig, host: str, port: int) -> Edge:
    """The policies' `Edge` when they declare one, else plain HTTP on the ingress port. Health checks go to each
    replica's admin port (the local stand-in for the gateway's readiness port), Istio's path mapped onto it."""
    edges = config.of_kind(Edge)
    if len(edges) > 1:
        raise EdgePolicyError(
            f"the policies declare {len(edges)} Edge objects ({', '.join(e.ref for e in edges)}); a mesh has one edge",
            hint="keep one Edge with several listeners",
        )
    edge = edges[0] if edges else Edge(name="edge", namespace=GATEWAY_NAMESPACE, listeners=[_http(host, port)])
    if edge.health_check.path == ISTIO_READINESS_PATH and edge.health_check.port is None:
        edge = edge.model_copy(
            update={"health_check": edge.health_check.model_copy(update={"path": LOCAL_READINESS_PATH})}
        )
    return edge


def per_replica_limits(config: MeshConfig, gateways: list[Proxy]) -> list[str]:
    """A note for each RateLimit that selects gateway replicas when there are several: Envoy's buckets are per proxy,
    so N replicas admit N times the rate (the edge's stick tables are the global limit)."""
    from mesh.controlplane.translate.ratelimit import selects  # the control plane's own scoping rule

    if len(gateways) < 2:
        return []
    return [
        f"{r.kind} {r.namespace}/{r.name}: each of the {len(gateways)} gateway replicas has its own bucket, so up to "
        f"{len(gateways)}x its rate is admitted (Edge.rate_limits counts across replicas; docs/edge.md)"
        for r in config.of_kind(RateLimit)
        if selects(r, gateways[0])
    ]


def _http(host: str, port: int) -> EdgeListener:
    return EdgeListener(name="http", port=port, address=host)


def replicas(gateways: list[Proxy]) -> list[Replica]:
    """The gateway replicas' plain-HTTP port (gateway port 80), health-checked on their admin port (which Envoy
    serves on the proxy's own address, not necessarily the one its listeners bind)."""
    return [
        Replica(
            name=g.name, host=g.listen[80][0], port=g.listen[80][1], health_port=SIDECAR_ADMIN_PORT, health_host=g.ip
        )
        for g in gateways
    ]


class EdgeBackend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    address: str
    status: str  # as HAProxy's health checks see it: UP, DOWN, "UP 1/2" while rising; "?" when unreadable
    requests: int = 0


class EdgeInfo(BaseModel):
    """The edge as `mesh status` shows it."""

    model_config = ConfigDict(extra="forbid")

    policy: str
    listeners: list[str]
    config: str
    backends: list[EdgeBackend]


def describe(edge: Edge, backends: list[Replica], runtime: Runtime, config_path: str) -> EdgeInfo:
    try:
        seen = runtime.servers(BACKEND)
    except OSError:
        seen = {}
    return EdgeInfo(
        policy=edge.ref,
        listeners=[f"{'https' if x.tls else 'http'}://{x.address}:{x.port}" for x in edge.listeners],
        config=config_path,
        backends=[
            EdgeBackend(
                name=r.name,
                address=f"{r.host}:{r.port}",
                status=seen[r.name].status if r.name in seen else "?",
                requests=seen[r.name].requests if r.name in seen else 0,
            )
            for r in backends
        ],
    )

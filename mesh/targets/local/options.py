"""How the local mesh runs: one model, shared by `mesh up`, the detached mesh process and the harness."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mesh.errors import UsageError
from mesh.observability.options import ObservabilityOptions


class LocalOptions(BaseModel):
    """How `mesh up` runs the local mesh. A new `mesh up` option is a field here (and its click option): the
    detached mesh receives this model whole, never a rebuilt command line."""

    model_config = ConfigDict(extra="forbid")

    state_dir: Path = Field(default_factory=lambda: Path(os.environ.get("MESH_STATE_DIR", ".meshops")))
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8080
    ingress_https_port: int = 8443
    loopback_block: int | None = None  # 127.B.0.0/16; random free block when None
    start_timeout: float = 30.0
    envoy_log_level: str = "warning"
    access_log: bool = False
    # how apps reach their sidecars: HTTP_PROXY (`proxy`), Istio's transparent capture (`iptables`, root), or
    # `auto` (iptables where network namespaces can be made); see mesh/targets/local/interception.py
    interception: Literal["auto", "proxy", "iptables"] = "proxy"
    # meshConfig.outboundTrafficPolicy: where a captured connection to an unknown destination goes (iptables mode)
    outbound_traffic_policy: Literal["ALLOW_ANY", "REGISTRY_ONLY"] = "ALLOW_ANY"
    # meshConfig.h2UpgradePolicy: whether HTTP/1.1 ports travel between sidecars as HTTP/2 (a DestinationRule overrides)
    h2_upgrade_policy: Literal["DO_NOT_UPGRADE", "UPGRADE"] = "DO_NOT_UPGRADE"
    # Istio's DNS proxying (iptables mode): each sidecar answers its pod's DNS (ISTIO_META_DNS_CAPTURE) and
    # ServiceEntries without addresses get one from 240.240.0.0/16 (ISTIO_META_DNS_AUTO_ALLOCATE)
    dns_proxy: bool = False
    dns_auto_allocate: bool = True
    observability: ObservabilityOptions | None = None  # metrics, traces, Prometheus (mesh.observability)
    # the edge and certificates (docs/edge.md)
    gateway_replicas: int = Field(default=1, ge=1, le=16)  # ingress gateway Envoys, each on its own address
    edge: Literal["haproxy"] | None = None  # an HAProxy edge tier on the ingress port, in front of the replicas
    # Envoy's stats flush (seconds, its default 5): a Rollout step reads its canary's p99 after the next flush
    stats_flush_interval: float = Field(default=5.0, ge=0.1, le=300.0)
    workload_cert_ttl: float = Field(default=24 * 3600.0, ge=2.0)  # seconds (Istio's default: 24h), renewed at half
    ca_dir: Path | None = None  # a plug-in CA: Istio's cacerts files (ca-cert.pem, ca-key.pem, root-cert.pem, ...)

    def check(self) -> None:
        """Refuse what would start but not work (before anything starts, so the message is the whole story)."""
        check_gateway_replicas(self.gateway_replicas, self.edge)


def check_gateway_replicas(replicas: int, edge: str | None) -> None:
    """N gateway replicas need something in front of them: locally only the edge tier spreads the ingress port over
    replicas on distinct addresses (in a cluster the gateway Service does). Without it replicas 2..N would run,
    report healthy and never see a request, so the option is refused instead of silently doing nothing."""
    if replicas > 1 and edge is None:
        raise UsageError(
            f"--gateway-replicas {replicas} without --edge: nothing would balance the ingress port over the replicas "
            f"(only the first would ever receive traffic)",
            hint=f"add `--edge haproxy` (HAProxy balances the {replicas} replicas with active health checks; "
            "`apt-get install haproxy`), or run one replica",
        )

"""networking.istio.io/v1 Sidecar: what a workload's proxy listens on and which services it can reach."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from mesh.api._base import Int, IstioModel, Resource
from mesh.api.networking import (
    NETWORKING,
    ConnectionPoolSettings,
    Destination,
    Protocol,
    ServerTLSSettings,
    canonical_protocol,
    check_gateway_host,
)

CaptureMode = Literal["DEFAULT", "IPTABLES", "NONE"]


class SidecarPort(IstioModel):
    number: Int | None = Field(default=None, ge=1, le=65535)
    protocol: Protocol | None = None
    name: str | None = None
    target_port: Int | None = Field(default=None, ge=1, le=65535)  # deprecated by Istio

    _p = field_validator("protocol", mode="before")(canonical_protocol)


class SidecarWorkloadSelector(IstioModel):
    """Sidecar's own selector type: `labels`, not `matchLabels`."""

    labels: dict[str, str] = {}


class IstioIngressListener(IstioModel):
    port: SidecarPort
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    default_endpoint: str | None = None
    tls: ServerTLSSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None


class IstioEgressListener(IstioModel):
    port: SidecarPort | None = None
    bind: str | None = None
    capture_mode: CaptureMode | None = None
    hosts: list[str] = Field(min_length=1)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            if "/" not in h:
                raise ValueError(f"egress host {h!r} must be namespace/dnsName (e.g. ./*, istio-system/*)")
            check_gateway_host(h)
        return v


class OutboundTrafficPolicy(IstioModel):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] | None = None
    egress_proxy: Destination | None = None


class Sidecar(Resource):
    api_version: ClassVar[str] = NETWORKING
    kind: ClassVar[str] = "Sidecar"

    workload_selector: SidecarWorkloadSelector | None = None
    ingress: list[IstioIngressListener] = []
    egress: list[IstioEgressListener] = []
    inbound_connection_pool: ConnectionPoolSettings | None = None
    outbound_traffic_policy: OutboundTrafficPolicy | None = None

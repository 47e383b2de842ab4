"""networking.istio.io/v1: ServiceEntry and WorkloadEntry, the entries Istio adds to its service registry."""

from __future__ import annotations

import ipaddress
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mesh.api._base import UINT32_MAX, Host, Int, IstioModel, Resource
from mesh.api.networking import NETWORKING, Protocol, WorkloadSelector, canonical_protocol


def _address(v: str) -> str:
    """An IP, a CIDR block or a Unix socket (`unix://...`), as Istio accepts for addresses and endpoints."""
    if v.startswith("unix://"):
        return v
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address or CIDR block") from None
    return v


class ServiceEntryPort(IstioModel):
    number: Int = Field(ge=1, le=65535)
    protocol: Protocol | None = None
    name: str = Field(min_length=1)
    target_port: Int | None = Field(default=None, ge=1, le=65535)

    _p = field_validator("protocol", mode="before")(canonical_protocol)


class WorkloadEntry(Resource):
    """A non-Kubernetes workload (a VM): its address, ports by name, labels and identity."""

    api_version: ClassVar[str] = NETWORKING
    kind: ClassVar[str] = "WorkloadEntry"
    spec_renames: ClassVar[dict[str, str]] = {"labels": "workload_labels"}  # metadata.labels is `labels`

    address: str | None = None
    ports: dict[str, Int] = {}
    workload_labels: dict[str, str] = {}
    network: str | None = None
    locality: str | None = None
    weight: Int | None = Field(default=None, ge=0, le=UINT32_MAX)
    service_account: str | None = None

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(n for n, p in v.items() if not 1 <= p <= 65535)
        if bad:
            raise ValueError(f"port {bad[0]!r}: {v[bad[0]]} is not a port number (1-65535)")
        return v


class Endpoint(IstioModel):
    """A ServiceEntry endpoint: WorkloadEntry's fields, inline."""

    address: str | None = None
    ports: dict[str, Int] = {}
    labels: dict[str, str] = {}
    network: str | None = None
    locality: str | None = None
    weight: Int | None = Field(default=None, ge=0, le=UINT32_MAX)
    service_account: str | None = None


class ServiceEntry(Resource):
    api_version: ClassVar[str] = NETWORKING
    kind: ClassVar[str] = "ServiceEntry"

    hosts: list[Host] = Field(min_length=1)
    addresses: list[str] = []
    ports: list[ServiceEntryPort] = []
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] | None = None
    endpoints: list[Endpoint] = []
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = []
    subject_alt_names: list[str] = []

    _a = field_validator("addresses")(lambda v: [_address(a) for a in v])

    @model_validator(mode="after")
    def _checks(self) -> ServiceEntry:
        if "*" in self.hosts:
            raise ValueError("a ServiceEntry host cannot be '*'")
        if self.workload_selector is not None and self.endpoints:
            raise ValueError("set workloadSelector or endpoints, not both")
        numbers = [str(p.number) for p in self.ports]
        names = [p.name for p in self.ports]
        for what, values in (("port number", numbers), ("port name", names)):
            dup = sorted({str(x) for x in values if values.count(x) > 1})
            if dup:
                raise ValueError(f"duplicate {what} {dup[0]}")
        if self.resolution == "STATIC":
            for e in self.endpoints:
                if e.address is None:
                    raise ValueError("resolution STATIC needs an address on every endpoint")
                _address(e.address)
        if (
            self.resolution in ("DNS", "DNS_ROUND_ROBIN")
            and self.addresses
            and any(h.startswith("*") for h in self.hosts)
        ):
            raise ValueError("wildcard hosts cannot be resolved by DNS")
        return self

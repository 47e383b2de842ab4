"""MeshConfig: everything one environment declares — workloads plus Istio resources."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from mesh.api._base import Resource
from mesh.api.networking import DestinationRule, Gateway, VirtualService
from mesh.api.security import AuthorizationPolicy, PeerAuthentication
from mesh.api.workloads import Service

R = TypeVar("R", bound=Resource)

KIND_ORDER = (
    "ServiceEntry",
    "WorkloadEntry",
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "Sidecar",
    "EnvoyFilter",
    "PeerAuthentication",
    "RequestAuthentication",
    "AuthorizationPolicy",
    "Telemetry",
    "Edge",
    "RateLimit",
    "Issuer",
)


@dataclass
class MeshConfig:
    """A policy set. Order of declaration does not matter: rendering sorts deterministically."""

    services: list[Service] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)

    def add(self, *objects: Resource | Service | Iterable[Resource | Service]) -> MeshConfig:
        for obj in objects:
            if isinstance(obj, Service):
                self.services.append(obj)
            elif isinstance(obj, Resource):
                self.resources.append(obj)
            else:
                self.add(*obj)
        return self

    def of_kind(self, cls: type[R]) -> list[R]:
        return [r for r in self.resources if isinstance(r, cls)]

    @property
    def gateways(self) -> list[Gateway]:
        return self.of_kind(Gateway)

    @property
    def virtual_services(self) -> list[VirtualService]:
        return self.of_kind(VirtualService)

    @property
    def destination_rules(self) -> list[DestinationRule]:
        return self.of_kind(DestinationRule)

    @property
    def peer_authentications(self) -> list[PeerAuthentication]:
        return self.of_kind(PeerAuthentication)

    @property
    def authorization_policies(self) -> list[AuthorizationPolicy]:
        return self.of_kind(AuthorizationPolicy)

    def sorted_resources(self) -> list[Resource]:
        return sorted(self.resources, key=lambda r: (KIND_ORDER.index(r.kind), r.namespace, r.name))

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.sorted_resources())

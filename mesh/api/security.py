"""security.istio.io/v1: PeerAuthentication and AuthorizationPolicy."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from mesh.api._base import IstioModel, Resource
from mesh.api.networking import WorkloadSelector

SECURITY = "security.istio.io/v1"

MTLSMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class PeerAuthenticationMTLS(IstioModel):
    mode: MTLSMode = "UNSET"


class PeerAuthentication(Resource):
    api_version: ClassVar[str] = SECURITY
    kind: ClassVar[str] = "PeerAuthentication"

    selector: WorkloadSelector | None = None
    mtls: PeerAuthenticationMTLS | None = None
    port_level_mtls: dict[int, PeerAuthenticationMTLS] = {}

    @model_validator(mode="after")
    def _port_level_needs_selector(self) -> PeerAuthentication:
        if self.port_level_mtls and not (self.selector and self.selector.match_labels):
            raise ValueError("portLevelMtls needs a workload selector (Istio ignores it otherwise)")
        return self


class Source(IstioModel):
    principals: list[str] = []
    not_principals: list[str] = []
    request_principals: list[str] = []
    not_request_principals: list[str] = []
    namespaces: list[str] = []
    not_namespaces: list[str] = []
    ip_blocks: list[str] = []
    not_ip_blocks: list[str] = []


class Operation(IstioModel):
    hosts: list[str] = []
    not_hosts: list[str] = []
    ports: list[str] = []
    not_ports: list[str] = []
    methods: list[str] = []
    not_methods: list[str] = []
    paths: list[str] = []
    not_paths: list[str] = []


class RuleFrom(IstioModel):
    source: Source


class RuleTo(IstioModel):
    operation: Operation


class Condition(IstioModel):
    key: str = Field(min_length=1)
    values: list[str] = []
    not_values: list[str] = []

    @model_validator(mode="after")
    def _some(self) -> Condition:
        if not self.values and not self.not_values:
            raise ValueError(f"condition on {self.key!r} needs values or notValues")
        return self


class Rule(IstioModel):
    from_: list[RuleFrom] = []
    to: list[RuleTo] = []
    when: list[Condition] = []


class AuthorizationPolicy(Resource):
    api_version: ClassVar[str] = SECURITY
    kind: ClassVar[str] = "AuthorizationPolicy"

    selector: WorkloadSelector | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    rules: list[Rule] = []

"""security.istio.io/v1: PeerAuthentication and AuthorizationPolicy."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mesh.api._base import IstioModel, Resource, check_duration
from mesh.api.networking import PolicyTargetReference, WorkloadSelector

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

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(data.get(k) == {} for k in ("portLevelMtls", "port_level_mtls")):
            raise ValueError("portLevelMtls is empty: list at least one port, or leave it out")
        return data

    @model_validator(mode="after")
    def _port_level_needs_selector(self) -> PeerAuthentication:
        if self.port_level_mtls and not (self.selector and self.selector.match_labels):
            raise ValueError("portLevelMtls needs a workload selector (Istio ignores it otherwise)")
        bad = sorted(p for p in self.port_level_mtls if not 1 <= p <= 65535)
        if bad:
            raise ValueError(f"portLevelMtls port {bad[0]} is not a port number (1-65535)")
        return self


class Source(IstioModel):
    principals: list[str] = []
    not_principals: list[str] = []
    request_principals: list[str] = []
    not_request_principals: list[str] = []
    namespaces: list[str] = []
    not_namespaces: list[str] = []
    service_accounts: list[str] = []
    not_service_accounts: list[str] = []
    ip_blocks: list[str] = []
    not_ip_blocks: list[str] = []
    remote_ip_blocks: list[str] = []
    not_remote_ip_blocks: list[str] = []
    trust_domains: list[str] = []
    not_trust_domains: list[str] = []

    @model_validator(mode="after")
    def _service_accounts_alone(self) -> Source:
        if (self.service_accounts or self.not_service_accounts) and (
            self.principals or self.not_principals or self.namespaces or self.not_namespaces
        ):
            raise ValueError("serviceAccounts cannot be combined with principals or namespaces")
        return self


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


class ExtensionProvider(IstioModel):
    name: str = Field(min_length=1)


class AuthorizationPolicy(Resource):
    api_version: ClassVar[str] = SECURITY
    kind: ClassVar[str] = "AuthorizationPolicy"

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = []
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: ExtensionProvider | None = None
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _custom_needs_provider(self) -> AuthorizationPolicy:
        if (self.action == "CUSTOM") != (self.provider is not None):
            raise ValueError("action CUSTOM needs a provider, and a provider needs action CUSTOM")
        _one_target(self.selector, self.target_ref, self.target_refs)
        return self


def _one_target(
    selector: WorkloadSelector | None, ref: PolicyTargetReference | None, refs: list[PolicyTargetReference]
) -> None:
    if sum((selector is not None, ref is not None, bool(refs))) > 1:
        raise ValueError("set only one of selector, targetRef and targetRefs")


# --- RequestAuthentication (JWT) ---------------------------------------------------------------


class JWTHeader(IstioModel):
    name: str = Field(min_length=1)
    prefix: str | None = None


class ClaimToHeader(IstioModel):
    header: str = Field(min_length=1)
    claim: str = Field(min_length=1)


class JWTRule(IstioModel):
    issuer: str = Field(min_length=1)
    audiences: list[str] = []
    jwks_uri: str | None = None
    jwks: str | None = None
    from_headers: list[JWTHeader] = []
    from_params: list[str] = []
    output_payload_to_header: str | None = None
    from_cookies: list[str] = []
    forward_original_token: bool | None = None
    output_claim_to_headers: list[ClaimToHeader] = []
    timeout: str | None = None
    space_delimited_claims: list[str] = []

    _d = field_validator("timeout")(check_duration)

    @model_validator(mode="after")
    def _one_key_source(self) -> JWTRule:
        if self.jwks_uri is not None and self.jwks is not None:
            raise ValueError("set jwksUri or jwks, not both")
        if self.jwks_uri is not None and not self.jwks_uri.startswith(("http://", "https://")):
            raise ValueError(f"jwksUri {self.jwks_uri!r} must be an http(s) URL")
        return self


class RequestAuthentication(Resource):
    api_version: ClassVar[str] = SECURITY
    kind: ClassVar[str] = "RequestAuthentication"

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = []
    jwt_rules: list[JWTRule] = []

    @model_validator(mode="after")
    def _checks(self) -> RequestAuthentication:
        _one_target(self.selector, self.target_ref, self.target_refs)
        issuers = [r.issuer for r in self.jwt_rules]
        dup = sorted({i for i in issuers if issuers.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate issuer {dup[0]!r} in jwtRules")
        return self

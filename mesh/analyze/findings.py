"""Findings: stable codes, levels and messages (modelled on `istioctl analyze`'s IST codes).

IST codes keep Istio's meaning so users can look them up; MSH codes are checks Istio does not make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mesh.api._base import SourceLocation

Level = Literal["Error", "Warning", "Info"]

DOCS = "docs/analysis.md#"


@dataclass(frozen=True)
class Message:
    code: str
    name: str
    level: Level
    template: str
    description: str


_CATALOG = [
    Message(
        "IST0101",
        "ReferencedResourceNotFound",
        "Error",
        "Referenced {what} not found: {ref}",
        "A VirtualService names a gateway, host or subset that no object defines.",
    ),
    Message(
        "IST0106",
        "SchemaValidationError",
        "Error",
        "{detail}",
        "A value Envoy would reject (e.g. a regex that is not RE2).",
    ),
    Message(
        "IST0109",
        "ConflictingMeshGatewayVirtualServiceHosts",
        "Error",
        "VirtualServices {others} define the same host {host} for the mesh",
        "Two VirtualServices for one host on the mesh gateway: which one wins is undefined.",
    ),
    Message(
        "IST0112",
        "DestinationPortSelectorRequired",
        "Error",
        "Service {host} has several ports {ports}: say which with destination.port",
        "A destination on a multi-port service needs a port selector.",
    ),
    Message(
        "IST0113",
        "MTLSPolicyConflict",
        "Error",
        "DestinationRule {dr} sends plaintext (tls.mode {mode}) to {host}, whose workloads require STRICT mTLS ({pa})",
        "The client side would send plaintext to servers that only accept mTLS: every request fails.",
    ),
    Message(
        "IST0130",
        "VirtualServiceUnreachableRule",
        "Warning",
        "This rule is never used: {why}",
        "An earlier rule matches everything this one matches.",
    ),
    Message(
        "IST0131",
        "VirtualServiceIneffectiveMatch",
        "Info",
        "This match is never used: {why}",
        "An earlier rule already matches everything this match clause matches.",
    ),
    Message(
        "IST0132",
        "VirtualServiceHostNotFoundInGateway",
        "Warning",
        "Host {host} is not served by gateway {gateway} (its hosts: {hosts})",
        "The VirtualService binds to a gateway that does not accept its host; the route is ignored there.",
    ),
    Message(
        "IST0145",
        "ConflictingGateways",
        "Error",
        "Gateways {others} both serve host {host} on port {port} for the same workloads",
        "Two Gateways select the same proxies and claim one host and port.",
    ),
    Message(
        "IST0173",
        "DestinationRuleSubsetNotSelectPods",
        "Warning",
        "Subset {subset} selects no workload (labels {labels})",
        "Traffic routed to this subset gets 503 'no healthy upstream'.",
    ),
    Message(
        "IST0174",
        "UnknownDestinationRuleHost",
        "Warning",
        "DestinationRule host {host} matches no service",
        "The DestinationRule has no effect.",
    ),
    Message(
        "MSH0001",
        "WeightsNotNormalized",
        "Warning",
        "Route weights total {total}, not 100: Envoy normalises them to {shares}",
        "Istio accepts any total and lets Envoy normalise; the intent is usually 100.",
    ),
    Message(
        "MSH0002",
        "ZeroTotalWeight",
        "Error",
        "Route weights total 0 across {n} destinations: Envoy rejects this route",
        "Several destinations whose weights are all zero.",
    ),
    Message(
        "MSH0003",
        "DestinationPortNotFound",
        "Error",
        "Port {port} is not a port of service {host} (its ports: {ports})",
        "Traffic to a port the service does not expose has nowhere to go.",
    ),
    Message(
        "MSH0004",
        "DuplicateName",
        "Error",
        "{what} {name} is declared more than once ({where})",
        "Two objects with one name: the second would silently overwrite the first.",
    ),
    Message(
        "MSH0005",
        "IneffectiveFault",
        "Warning",
        "Fault {what} has percentage 0 and never fires",
        "A fault that cannot fire is usually a mistake.",
    ),
    Message(
        "MSH0006",
        "WorkloadNotRunnable",
        "Error",
        "Version {version} of {service} has no {what}: {target} cannot run it",
        "The target needs a command (local) or an image (kubernetes) for every version.",
    ),
    Message(
        "MSH0100",
        "UnsupportedByTarget",
        "Error",
        "{field} is not supported by the {target} target yet: {why}",
        "Never ignored silently: remove the field or use a target that supports it.",
    ),
]

MESSAGES: dict[str, Message] = {m.code: m for m in _CATALOG}


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    resource: str  # "VirtualService default/reviews"
    path: str = ""  # "spec.http[0].route[1].destination.subset"
    source: SourceLocation | None = None

    @property
    def level(self) -> Level:
        return MESSAGES[self.code].level

    @property
    def name(self) -> str:
        return MESSAGES[self.code].name

    def __str__(self) -> str:
        where = f" {self.source}" if self.source else ""
        path = f" {self.path}:" if self.path else ""
        return f"{self.level} [{self.code}] ({self.resource}{where}){path} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "level": self.level,
            "resource": self.resource,
            "path": self.path,
            "source": str(self.source) if self.source else None,
            "message": self.message,
            "documentation": DOCS + self.code.lower(),
        }


def finding(code: str, resource: str, path: str = "", source: SourceLocation | None = None, **params: Any) -> Finding:
    return Finding(
        code=code, message=MESSAGES[code].template.format(**params), resource=resource, path=path, source=source
    )

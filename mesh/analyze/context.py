"""What analyzers read: the config plus indexes, and what the target can and cannot do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from mesh.analyze.findings import Finding
from mesh.api._base import Resource, SourceLocation
from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule, Gateway
from mesh.api.workloads import Service, Version
from mesh.istio import destination_rule_for, gateway_key, gateway_ref, resolve_host


@dataclass(frozen=True)
class TargetCapabilities:
    """A target declares the fields it cannot honour yet (generic path -> why) and what it runs."""

    name: str
    unsupported: dict[str, str] = field(default_factory=dict)
    # generic path -> a check of the value that returns why it is unsupported (or None when fine)
    unsupported_values: dict[str, Callable[[object], str | None]] = field(default_factory=dict)
    needs: str | None = None  # "command" (local) or "image" (kubernetes)


@dataclass
class Context:
    config: MeshConfig
    target: TargetCapabilities | None = None

    def __post_init__(self) -> None:
        self.services = {s.fqdn: s for s in self.config.services}

    def service(self, host: str, namespace: str) -> Service | None:
        return self.services.get(resolve_host(host, namespace))

    def destination_rule(self, host: str, namespace: str) -> DestinationRule | None:
        return destination_rule_for(self.config.destination_rules, host, namespace)

    def gateway(self, ref: str, namespace: str) -> Gateway | None:
        key = gateway_ref(ref, namespace)
        return next((g for g in self.config.gateways if gateway_key(g) == key), None)

    def pods_matching(self, service: Service, labels: dict[str, str]) -> list[Version]:
        return [v for v in service.versions if labels.items() <= service.pod_labels(v).items()]


AnalyzerFn = Callable[[Context], Iterable[Finding]]


@dataclass(frozen=True)
class Analyzer:
    name: str
    description: str
    codes: tuple[str, ...]
    run: AnalyzerFn


REGISTRY: list[Analyzer] = []


def analyzer(name: str, description: str, codes: tuple[str, ...]) -> Callable[[AnalyzerFn], AnalyzerFn]:
    def register(fn: AnalyzerFn) -> AnalyzerFn:
        REGISTRY.append(Analyzer(name, description, codes, fn))
        return fn

    return register


class Placement(TypedDict):
    resource: str
    source: SourceLocation | None


def at(obj: Resource | Service) -> Placement:
    """Keyword arguments that place a finding on an object."""
    if isinstance(obj, Service):
        return {"resource": f"Service {obj.namespace}/{obj.name}", "source": obj.source}
    return {"resource": obj.ref, "source": obj.source}

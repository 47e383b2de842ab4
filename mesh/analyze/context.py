"""What analyzers read: the config plus indexes, and what the target can and cannot do."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypedDict

from mesh.analyze.findings import Finding
from mesh.api._base import Resource, SourceLocation
from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule, Gateway
from mesh.api.registry import ServiceEntry
from mesh.api.workloads import Service, Version
from mesh.istio import (
    EGRESS_GATEWAY_LABELS,
    INGRESS_GATEWAY_LABELS,
    ROOT_NAMESPACE,
    destination_rule_for,
    gateway_key,
    gateway_ref,
    host_matches,
    resolve_host,
)
from mesh.istio.serviceentries import egress_gateway_entry, egress_gateway_servers


@dataclass(frozen=True)
class TargetCapabilities:
    """A target declares the fields it cannot honour yet (generic path -> why) and what it runs."""

    name: str
    unsupported: dict[str, str] = field(default_factory=dict)
    # generic path -> a check of the value that returns why it is unsupported (or None when fine)
    unsupported_values: dict[str, Callable[[object], str | None]] = field(default_factory=dict)
    needs: str | None = None  # "command" (local) or "image" (kubernetes)


@dataclass(frozen=True)
class Workload:
    """A running pod as analysis sees it: where it runs and its labels."""

    namespace: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Inventory:
    """What exists besides the config's own services (as `istioctl analyze` sees the cluster): pods outside them,
    such as the ingress gateway every target runs or `Pod` objects in the input, and the TLS credentials
    gateways may name (None: unknown here, so not checked)."""

    workloads: tuple[Workload, ...] = (Workload("istio-system", INGRESS_GATEWAY_LABELS),)
    credentials: frozenset[str] | None = None


@dataclass
class Context:
    config: MeshConfig
    target: TargetCapabilities | None = None
    inventory: Inventory = field(default_factory=Inventory)

    def __post_init__(self) -> None:
        self.services = {s.fqdn: s for s in self.config.services}

    @cached_property
    def workloads(self) -> list[Workload]:
        """Every pod: each running version of each service, then the inventory's."""
        pods = [
            Workload(s.namespace, s.pod_labels(v)) for s in self.config.services for v in s.versions if v.replicas > 0
        ]
        return pods + list(self.inventory.workloads) + self._runtime_workloads

    @property
    def _local(self) -> bool:
        return self.target is not None and self.target.name == "local"

    @cached_property
    def _runtime_workloads(self) -> list[Workload]:
        """The local mesh starts the egress gateway when a Gateway selects it (Kubernetes needs one installed)."""
        return [Workload(ROOT_NAMESPACE, EGRESS_GATEWAY_LABELS)] if self._local else []

    def selects_any(self, selector: Mapping[str, str], namespace: str | None = None) -> bool:
        """Whether a label selector (in `namespace`, or anywhere) matches some workload."""
        return any(selector.items() <= w.labels.items() and namespace in (None, w.namespace) for w in self.workloads)

    def service_entry(self, host: str, namespace: str) -> ServiceEntry | None:
        """A ServiceEntry that adds `host` to the registry (its hosts may be wildcards)."""
        fqdn = resolve_host(host, namespace)
        entries = self.config.of_kind(ServiceEntry)
        ports = egress_gateway_servers(self.config.resources) if self._local else []
        if ports:  # the egress gateway's Service, as the local runtime registers it
            entries = [*entries, egress_gateway_entry("0.0.0.0", ports, ROOT_NAMESPACE)]
        return next((se for se in entries if any(host_matches(h, fqdn) for h in se.hosts)), None)

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

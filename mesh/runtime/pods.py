"""Workload instances and the Envoys that serve them: what the control plane configures and the data plane runs.

Neutral ground: the control plane translates for these proxies, the data plane starts them, the harness reaches them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mesh.api.workloads import Service, ServicePort, spiffe_id
from mesh.istio import DOMAIN_SUFFIX, INGRESS_GATEWAY_LABELS, ROOT_NAMESPACE

SIDECAR_ADMIN_PORT = 15000
SIDECAR_OUTBOUND_PORT = 15001  # the HTTP proxy port apps reach through HTTP_PROXY
GATEWAY_NAMESPACE = ROOT_NAMESPACE  # the ingress gateway runs in the root namespace, as istioctl installs it
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
GATEWAY_LABELS: Mapping[str, str] = INGRESS_GATEWAY_LABELS


@dataclass(frozen=True)
class Pod:
    """One workload instance: the sidecar owns `ip`, the app listens on `app_ip`."""

    name: str
    namespace: str
    service: str
    version: str
    labels: Mapping[str, str]
    ip: str
    app_ip: str
    service_account: str
    ports: tuple[ServicePort, ...]
    healthy: bool = True
    app_socket: str = ""  # set: the app listens on this Unix socket (owner-only dir), not on app_ip

    @property
    def identity(self) -> str:
        return spiffe_id(self.namespace, self.service_account)

    @property
    def fqdn(self) -> str:
        return f"{self.service}.{self.namespace}.svc.{DOMAIN_SUFFIX}"


@dataclass(frozen=True)
class Proxy:
    """An Envoy the control plane configures: a pod's sidecar, or the ingress gateway ("router")."""

    kind: Literal["sidecar", "router"]
    ip: str
    name: str
    namespace: str
    labels: Mapping[str, str]
    service_account: str
    pod: Pod | None = None
    # router only: gateway server port -> (bind address, bind port) on the host
    listen: Mapping[int, tuple[str, int]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Istio's node id format: `sidecar~10.0.0.1~reviews-v1-0.default~default.svc.cluster.local`."""
        return f"{self.kind}~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.{DOMAIN_SUFFIX}"

    @property
    def identity(self) -> str:
        return spiffe_id(self.namespace, self.service_account)

    @property
    def short(self) -> str:
        return f"{self.name}.{self.namespace}"


def pod_dns_names(pod: Pod, client_namespace: str) -> list[str]:
    """The names a pod of a headless service answers to, as Kubernetes DNS gives a StatefulSet's pods
    (`<pod>.<service>.<namespace>.svc.cluster.local`, and the shorter forms a client's search path completes)."""
    base = f"{pod.name}.{pod.service}.{pod.namespace}"
    names = [f"{base}.svc.{DOMAIN_SUFFIX}", f"{base}.svc", base]
    if pod.namespace == client_namespace:
        names.append(f"{pod.name}.{pod.service}")
    return names


def sidecar_for(pod: Pod) -> Proxy:
    return Proxy("sidecar", pod.ip, pod.name, pod.namespace, pod.labels, pod.service_account, pod)


def gateway_proxy(ip: str, listen: Mapping[int, tuple[str, int]], name: str = "istio-ingressgateway") -> Proxy:
    return Proxy("router", ip, name, GATEWAY_NAMESPACE, GATEWAY_LABELS, GATEWAY_SERVICE_ACCOUNT, None, listen)


def pods_for(service: Service, ips: Callable[[], tuple[str, str]]) -> list[Pod]:
    """Pods for every replica of every version; `ips()` hands out (pod ip, app ip) pairs."""
    out = []
    for v in service.versions:
        for i in range(v.replicas):
            ip, app_ip = ips()
            out.append(
                Pod(
                    name=f"{service.name}-{v.name}-{i}",
                    namespace=service.namespace,
                    service=service.name,
                    version=v.name,
                    labels=service.pod_labels(v),
                    ip=ip,
                    app_ip=app_ip,
                    service_account=service.service_account or service.name,
                    ports=tuple(service.ports),
                )
            )
    return out

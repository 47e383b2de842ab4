"""The workload registry the control plane reads: pods (with their IPs and labels) and proxies.

On Kubernetes this is what istiod learns from the API server; locally the supervisor registers what it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from mesh.api.workloads import Service, ServicePort, spiffe_id

SIDECAR_ADMIN_PORT = 15000
SIDECAR_OUTBOUND_PORT = 15001  # the HTTP proxy port apps reach through HTTP_PROXY
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"
GATEWAY_LABELS: Mapping[str, str] = {"istio": "ingressgateway", "app": "istio-ingressgateway"}


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

    @property
    def identity(self) -> str:
        return spiffe_id(self.namespace, self.service_account)

    @property
    def fqdn(self) -> str:
        return f"{self.service}.{self.namespace}.svc.cluster.local"


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
        return f"{self.kind}~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.cluster.local"

    @property
    def identity(self) -> str:
        return spiffe_id(self.namespace, self.service_account)

    @property
    def short(self) -> str:
        return f"{self.name}.{self.namespace}"


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


class Registry:
    """Pods and proxies, thread-safe; listeners are told when health changes (EDS must follow)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._proxies: dict[str, Proxy] = {}
        self._listeners: list[Callable[[], None]] = []

    def add_pod(self, pod: Pod) -> None:
        with self._lock:
            self._pods[pod.name + "." + pod.namespace] = pod
            self._proxies[sidecar_for(pod).id] = sidecar_for(pod)

    def add_proxy(self, proxy: Proxy) -> None:
        with self._lock:
            self._proxies[proxy.id] = proxy

    def set_health(self, pod_name: str, namespace: str, healthy: bool) -> bool:
        key = pod_name + "." + namespace
        with self._lock:
            pod = self._pods.get(key)
            if pod is None or pod.healthy == healthy:
                return False
            self._pods[key] = replace(pod, healthy=healthy)
            listeners = list(self._listeners)
        for cb in listeners:
            cb()
        return True

    def on_change(self, cb: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(cb)

    @property
    def pods(self) -> list[Pod]:
        with self._lock:
            return sorted(self._pods.values(), key=lambda p: (p.namespace, p.name))

    @property
    def proxies(self) -> list[Proxy]:
        with self._lock:
            return sorted(self._proxies.values(), key=lambda p: p.id)

    def proxy(self, ref: str) -> Proxy | None:
        """By node id, `name.namespace`, or bare name."""
        for p in self.proxies:
            if ref in (p.id, p.short, p.name):
                return p
        return None

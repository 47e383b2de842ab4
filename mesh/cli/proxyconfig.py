"""`mesh proxy-config`: summaries of Envoy's own config_dump, in istioctl's shape."""

from __future__ import annotations

import json
from typing import Any

from mesh.cli.tables import table
from mesh.dataplane.envoy import Admin

_DUMP_TYPES = {
    "listeners": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "routes": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "clusters": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "secrets": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
    "endpoints": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
}


def _section(dump: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in dump.get("configs", []) if c.get("@type") == _DUMP_TYPES[kind]), {})


def show(kind: str, admin_address: str, output: str) -> str:
    """`admin_address`: the proxy's admin as `mesh status` lists it (an owner-only Unix socket)."""
    admin = Admin.at(admin_address)
    dump = admin.config_dump(include_eds=kind in ("endpoints", "all"))
    if output == "json":
        if kind == "all":
            return json.dumps(dump, indent=2) + "\n"
        return json.dumps(_section(dump, kind), indent=2) + "\n"
    if kind == "all":
        return "\n\n".join(render(k, dump, admin) for k in ("listeners", "routes", "clusters", "endpoints")) + "\n"
    return render(kind, dump, admin) + "\n"


def _chain(chain: dict[str, Any], fallback: str = "default") -> str:
    """A filter chain's name, with where its tcp_proxy sends connections (`name->cluster` or weighted clusters)."""
    name = chain.get("name") or fallback
    for f in chain.get("filters", []):
        cfg = f.get("typed_config", {})
        if not str(cfg.get("@type", "")).endswith("TcpProxy"):
            continue
        weighted = cfg.get("weighted_clusters", {}).get("clusters", [])
        to = cfg.get("cluster") or "+".join(f"{c['name']}:{c.get('weight')}" for c in weighted)
        return f"{name}->{to}"
    return str(name)


def _host(table: str, name: str, vhds: bool) -> str:
    """A virtual host as translated: over VHDS Envoy holds it as `<table>/<host>` (the name is its resource name)."""
    return name.removeprefix(f"{table}/") if vhds else name


def render(kind: str, dump: dict[str, Any], admin: Admin) -> str:
    sec = _section(dump, kind)
    if kind == "listeners":
        rows = []
        for dl in sec.get("dynamic_listeners", []):
            lst = (dl.get("active_state") or dl.get("warming_state") or {}).get("listener", {})
            sa = lst.get("address", {}).get("socket_address", {})
            chains = [_chain(c) for c in lst.get("filter_chains", [])]
            if "default_filter_chain" in lst:
                chains.append(_chain(lst["default_filter_chain"], "default"))
            rows.append(
                [
                    lst.get("name", dl.get("name")),
                    f"{sa.get('address')}:{sa.get('port_value')}",
                    ",".join(chains),
                    "ACTIVE" if "active_state" in dl else "WARMING",
                ]
            )
        return table(["NAME", "ADDRESS:PORT", "FILTER CHAINS", "STATE"], rows)
    if kind == "routes":
        rows = []
        for rc in sec.get("dynamic_route_configs", []):
            cfg = rc.get("route_config", {})
            name, vhds = cfg.get("name", ""), "vhds" in cfg
            for vh in cfg.get("virtual_hosts", []):
                for r in vh.get("routes", []):
                    m = r.get("match", {})
                    match = m.get("path") or m.get("prefix") or (m.get("safe_regex") or {}).get("regex", "")
                    if m.get("headers"):
                        match += " " + ",".join(h["name"] for h in m["headers"])
                    action = r.get("route", {})
                    dest = (
                        action.get("cluster")
                        or ", ".join(
                            f"{c['name']}:{c.get('weight')}"
                            for c in action.get("weighted_clusters", {}).get("clusters", [])
                        )
                        or ("redirect" if "redirect" in r else "")
                    )
                    rows.append(
                        [f"{name} (VHDS)" if vhds else name, _host(name, vh.get("name", ""), vhds), match, dest]
                    )
        return table(["NAME", "VIRTUAL HOST", "MATCH", "DESTINATION"], rows)
    if kind == "clusters":
        rows = []
        for c in sec.get("dynamic_active_clusters", []) + sec.get("static_clusters", []):
            cl = c.get("cluster", {})
            parts = cl.get("name", "").split("|")
            if len(parts) == 4:
                rows.append(
                    [
                        parts[3] or "-",
                        parts[1],
                        parts[2] or "-",
                        parts[0],
                        cl.get("type", "EDS" if "eds_cluster_config" in cl else ""),
                    ]
                )
            else:
                rows.append([cl.get("name"), "-", "-", "-", cl.get("type", "")])
        return table(["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"], rows)
    if kind == "endpoints":
        rows = []
        for cs in admin.clusters().get("cluster_statuses", []):
            for h in cs.get("host_statuses", []):
                sa = h.get("address", {}).get("socket_address", {})
                health = h.get("health_status", {})
                state = "HEALTHY"
                if health.get("failed_outlier_check"):
                    state = "OUTLIER-EJECTED"
                elif health.get("eds_health_status", "HEALTHY") != "HEALTHY":
                    state = health.get("eds_health_status")
                rows.append([f"{sa.get('address')}:{sa.get('port_value')}", state, cs.get("name")])
        return table(["ENDPOINT", "STATUS", "CLUSTER"], rows)
    if kind == "secrets":
        from mesh.controlplane.ca.inspect import secret_validity

        rows = []
        for s in sec.get("dynamic_active_secrets", []):
            v = secret_validity(s)
            window = [v.not_before.isoformat() if v.not_before else "", v.not_after.isoformat() if v.not_after else ""]
            valid = "true" if v.valid() else "false"
            rows.append(
                [s.get("name"), v.kind, str(v.certificates), valid, v.serial, *window, s.get("version_info", "")[:8]]
            )
        return table(
            ["RESOURCE NAME", "TYPE", "CERTS", "VALID", "SERIAL NUMBER", "NOT BEFORE", "NOT AFTER", "VERSION"], rows
        )
    raise ValueError(kind)

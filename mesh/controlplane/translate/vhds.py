"""VHDS: a sidecar's outbound route tables with their virtual hosts delivered as resources of their own.

An unscoped sidecar's route table holds a virtual host per service port (~1,000 at 1,000 services, 1.1 MB), and it
is one xDS resource: a one-route change resends all of it to every proxy, which parses all of it. Envoy's Virtual
Host Discovery Service splits it: the route table keeps its name and settings and names a delta source (`vhds`),
and each virtual host is a resource named `<route table>/<host>`, so a one-route change sends one virtual host.
Istio does not do this (it scopes with the Sidecar resource instead); it pays for meshes nobody has scoped.

Envoy keys what it holds by the virtual host's own `name` (added and removed alike), so the name is the resource
name. Envoy merges the hosts back into the table: config_dump shows them under the route table, named
`<route table>/<host>`; `host_name` undoes that for display.

A table over VHDS is renamed (`<table>.vhds`) and its listeners pointed at the new name. Switching a table in
place (RDS first, its hosts after over VHDS) left it empty for the few ms between the two: requests got 404s
(measured: 5 of ~600 in 0.5 s). Under a new name the listener changes, and Envoy warms the new listener until its
table and hosts have arrived before it takes connections.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable, Sequence
from functools import partial
from typing import Final

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.message import Message

from mesh.controlplane.translate.cache import PushCache
from mesh.controlplane.translate.context import MeshOptions
from mesh.controlplane.xds.snapshot import Resources

# the bootstrap's static cluster to the control plane (`mesh/dataplane/envoy.py`, Istio's name too)
XDS_CLUSTER: Final = "xds-grpc"

# `auto` splits a table with at least this many virtual hosts (see the README's benchmark rows for why)
AUTO_MIN_HOSTS: Final = 100

HCM: Final = "envoy.filters.network.http_connection_manager"
SUFFIX: Final = ".vhds"  # a table over VHDS is named `<table>.vhds`


def table_name(name: str) -> str:
    return name + SUFFIX


def source() -> config_source_pb2.ConfigSource:
    """Where Envoy asks for the hosts: its own delta gRPC stream (Envoy refuses VHDS over a state-of-the-world ADS
    stream, and ours is one)."""
    api = config_source_pb2.ApiConfigSource(
        api_type=config_source_pb2.ApiConfigSource.DELTA_GRPC,
        transport_api_version=config_source_pb2.V3,
        grpc_services=[
            grpc_service_pb2.GrpcService(envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=XDS_CLUSTER))
        ],
    )
    return config_source_pb2.ConfigSource(api_config_source=api, resource_api_version=config_source_pb2.V3)


def wanted(options: MeshOptions, tables: Iterable[Message]) -> bool:
    """Whether any of these tables goes over VHDS (`split` then picks which)."""
    return any(_split_table(options, t) for t in tables)


def pays(options: MeshOptions, hosts: int) -> bool:
    """Whether a table of `hosts` virtual hosts goes over VHDS."""
    return options.vhds == "on" or (options.vhds == "auto" and hosts >= AUTO_MIN_HOSTS)


def _split_table(options: MeshOptions, table: Message) -> bool:
    assert isinstance(table, route_pb2.RouteConfiguration)
    return pays(options, len(table.virtual_hosts))


def bare(table: route_pb2.RouteConfiguration) -> route_pb2.RouteConfiguration:
    """`table` (without hosts) renamed and naming the VHDS source."""
    out = route_pb2.RouteConfiguration()
    out.CopyFrom(table)
    out.ClearField("virtual_hosts")
    out.name = table_name(table.name)
    out.vhds.config_source.CopyFrom(source())
    return out


def retarget(listeners: Sequence[listener_pb2.Listener], tables: Collection[str]) -> list[listener_pb2.Listener]:
    """`listeners` with every HTTP connection manager whose RDS table is one of `tables` pointed at that table's
    VHDS name. A listener that changes is copied: the builders' messages may be shared."""
    if not tables:
        return list(listeners)
    return [_retargeted(lst, tables) for lst in listeners]


def _retargeted(listener: listener_pb2.Listener, tables: Collection[str]) -> listener_pb2.Listener:
    out: listener_pb2.Listener | None = None
    chains = [
        *listener.filter_chains,
        *([listener.default_filter_chain] if listener.HasField("default_filter_chain") else []),
    ]
    for c, chain in enumerate(chains):
        for f, flt in enumerate(chain.filters):
            if flt.name != HCM:
                continue
            manager = hcm.HttpConnectionManager.FromString(flt.typed_config.value)
            if not manager.HasField("rds") or manager.rds.route_config_name not in tables:
                continue
            manager.rds.route_config_name = table_name(manager.rds.route_config_name)
            if out is None:
                out = listener_pb2.Listener()
                out.CopyFrom(listener)
            target = out.filter_chains[c] if c < len(out.filter_chains) else out.default_filter_chain
            target.filters[f].typed_config.value = manager.SerializeToString()
    return out if out is not None else listener


def host_name(table: str, name: str) -> str:
    """The virtual host's name as translated, from the name Envoy holds it by."""
    prefix = f"{table}/"
    return name[len(prefix) :] if name.startswith(prefix) else name


def split(cache: PushCache, routes: Resources) -> tuple[Resources, Resources]:
    """(the route tables, the hosts of those that go over VHDS as `<table>.vhds/<host>` resources), for tables cut
    from built ones (iptables mode's per-port tables). Each host is renamed, encoded and hashed once per content and
    reused across tables, proxies and pushes; HTTP_PROXY mode's table skips all this (`__init__._sidecar_tables`).

    Envoy opens one VHDS stream per table and subscribes each as a wildcard (measured with Envoy 1.40: the first
    request names nothing), keeping only the hosts under its table's name: every stream is sent every table's
    hosts. So `auto` splits only the large tables (iptables mode's small per-port tables stay whole)."""
    tables: list[route_pb2.RouteConfiguration] = []
    hosts: list[Resources] = []
    for name, table in routes.items.items():
        assert isinstance(table, route_pb2.RouteConfiguration)
        if not _split_table(cache.push.options, table):
            tables.append(table)
            continue
        tables.append(bare(_without_hosts(table)))
        for vh in table.virtual_hosts:
            hosts.append(cache.cached(_host_key(name, vh), partial(host, table_name(name), vh)))
    return Resources.of(tables), Resources.combine(*hosts)


def _without_hosts(table: route_pb2.RouteConfiguration) -> route_pb2.RouteConfiguration:
    """Every field but the hosts, without copying the hosts first (a large table's are ~1 MB)."""
    out = route_pb2.RouteConfiguration()
    for fd, value in table.ListFields():
        if fd.name == "virtual_hosts":
            continue
        if fd.is_repeated:
            getattr(out, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(out, fd.name).CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out


def _host_key(table: str, vh: rc.VirtualHost) -> Hashable:
    return ("vhds", table, vh.SerializeToString(deterministic=True))


def host(table: str, vh: rc.VirtualHost) -> Resources:
    """One host as its own resource, named `<table>/<host>` (Envoy keys it by that name); `table` is the VHDS
    table's name."""
    out = rc.VirtualHost()
    out.CopyFrom(vh)
    out.name = f"{table}/{vh.name}"
    return Resources.of([out])

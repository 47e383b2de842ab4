"""VHDS: a sidecar's outbound route tables with their virtual hosts delivered as resources of their own.

An unscoped sidecar's route table holds a virtual host per service port (~1,000 at 1,000 services, 1.1 MB), and it
is one xDS resource: a one-route change resends all of it to every proxy, which parses all of it. Envoy's Virtual
Host Discovery Service splits it: the route table keeps its name and settings and names a delta source (`vhds`),
and each virtual host is a resource named `<route table>/<host>`, so a one-route change sends one virtual host.
Istio does not do this (it scopes with the Sidecar resource instead); it pays for meshes nobody has scoped.

Envoy keys what it holds by the virtual host's own `name` (added and removed alike), so the name is the resource
name. Envoy merges the hosts back into the table: config_dump shows them under the route table, named
`<route table>/<host>`; `host_name` undoes that for display.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from functools import partial
from typing import Final

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from google.protobuf.message import Message

from mesh.controlplane.translate.cache import PushCache
from mesh.controlplane.translate.context import MeshOptions
from mesh.controlplane.xds.snapshot import Resources

# the bootstrap's static cluster to the control plane (`mesh/dataplane/envoy.py`, Istio's name too)
XDS_CLUSTER: Final = "xds-grpc"

# `auto` splits a table with at least this many virtual hosts (see the README's benchmark rows for why)
AUTO_MIN_HOSTS: Final = 100


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


def _split_table(options: MeshOptions, table: Message) -> bool:
    mode = options.vhds
    assert isinstance(table, route_pb2.RouteConfiguration)
    return mode == "on" or (mode == "auto" and len(table.virtual_hosts) >= AUTO_MIN_HOSTS)


def host_name(table: str, name: str) -> str:
    """The virtual host's name as translated, from the name Envoy holds it by."""
    prefix = f"{table}/"
    return name[len(prefix) :] if name.startswith(prefix) else name


def split(cache: PushCache, routes: Resources) -> tuple[Resources, Resources]:
    """(the route tables, the hosts of those that go over VHDS as `<table>/<host>` resources). Each host is
    renamed, encoded and hashed once per content and reused across tables, proxies and pushes.

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
        bare = route_pb2.RouteConfiguration()
        bare.CopyFrom(table)
        bare.ClearField("virtual_hosts")
        bare.vhds.config_source.CopyFrom(source())
        tables.append(bare)
        for vh in table.virtual_hosts:
            hosts.append(cache.cached(_host_key(name, vh), partial(_host, name, vh)))
    return Resources.of(tables), Resources.combine(*hosts)


def _host_key(table: str, vh: rc.VirtualHost) -> Hashable:
    return ("vhds", table, vh.SerializeToString(deterministic=True))


def _host(table: str, vh: rc.VirtualHost) -> Resources:
    out = rc.VirtualHost()
    out.CopyFrom(vh)
    out.name = f"{table}/{vh.name}"
    return Resources.of([out])

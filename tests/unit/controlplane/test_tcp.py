"""TCP and TLS translation (tcp.py), checked on the protos Envoy receives; the e2e tests drive real Envoy."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from mesh.api import (
    AuthorizationPolicy,
    Destination,
    Gateway,
    MeshConfig,
    Operation,
    Port,
    PortSelector,
    Resource,
    RouteDestination,
    Rule,
    RuleTo,
    Server,
    ServerTLSSettings,
    TLSMatchAttributes,
    TLSRoute,
    VirtualService,
    WorkloadSelector,
)
from mesh.controlplane.translate import MeshOptions, PushContext
from mesh.controlplane.xds import resources as rt
from mesh.runtime import gateway_proxy
from policies.testbed import tcp_echo, tcp_echo_policies

from .conftest import World

ECHO = "tcp-echo.default.svc.cluster.local"


def _to(host: str, subset: str, port: int | None = None) -> RouteDestination:
    return RouteDestination(
        destination=Destination(host=host, subset=subset, port=PortSelector(number=port) if port else None)
    )


def _world(world: World, *extra: Resource) -> World:
    world.config = MeshConfig(
        services=[*world.config.services, tcp_echo],
        resources=[*world.config.resources, *tcp_echo_policies(v2_weight=20), *extra],
    )
    world.pods = [p for p in World(world.config).pods]
    vips = tuple((s.fqdn, f"10.255.0.{i + 1}") for i, s in enumerate(world.config.services))
    world.push = PushContext(world.config, world.pods, MeshOptions(interception="iptables", service_vips=vips))
    return world


def _vip(world: World) -> str:
    return dict(world.push.options.service_vips)[tcp_echo.fqdn]


def _listeners(world: World, proxy: object) -> dict[str, listener_pb2.Listener]:
    items = world.snapshot(proxy).resources(rt.LISTENER).items  # type: ignore[arg-type]
    return {n: m for n, m in items.items() if isinstance(m, listener_pb2.Listener)}


def _tcp_proxy(chain: object) -> tcp_proxy_pb2.TcpProxy:
    out = tcp_proxy_pb2.TcpProxy()
    next(f for f in chain.filters if f.name == "envoy.filters.network.tcp_proxy").typed_config.Unpack(out)  # type: ignore[attr-defined]
    return out


def test_outbound_listener_per_vip_splits_connections_by_weight(world: World) -> None:
    w = _world(world)
    listener = _listeners(w, w.sidecar("productpage-v1-0"))[f"{_vip(w)}_9000"]
    assert listener.bind_to_port.value is False  # virtualOutbound hands connections over by original destination
    proxy = _tcp_proxy(listener.default_filter_chain)
    assert [(c.name, c.weight) for c in proxy.weighted_clusters.clusters] == [
        (f"outbound|9000|v1|{ECHO}", 80),
        (f"outbound|9000|v2|{ECHO}", 20),
    ]


def test_tcp_clusters_carry_the_mesh_alpn_and_no_http_options(world: World) -> None:
    w = _world(world)
    clusters = w.snapshot(w.sidecar("productpage-v1-0")).resources(rt.CLUSTER).items
    c = clusters[f"outbound|9000|v1|{ECHO}"]
    assert isinstance(c, cluster_pb2.Cluster)
    assert not c.typed_extension_protocol_options  # bytes, not HTTP
    assert b"istio-peer-exchange" in c.transport_socket.typed_config.value


def test_tls_routes_match_sni_on_sidecars(world: World) -> None:
    vs = VirtualService(
        name="tcp-echo-sni",
        hosts=["tcp-echo"],
        tls=[TLSRoute(match=[TLSMatchAttributes(sni_hosts=["v2.example"])], route=[_to("tcp-echo", "v2")])],
    )
    w = _world(world, vs)
    w.config = MeshConfig(
        services=w.config.services,
        resources=[r for r in w.config.resources if r.name != "tcp-echo" or r.kind != "VirtualService"],
    )
    w.push = PushContext(w.config, w.pods, w.push.options)
    listener = _listeners(w, w.sidecar("productpage-v1-0"))[f"{_vip(w)}_9000"]
    (chain,) = listener.filter_chains
    assert list(chain.filter_chain_match.server_names) == ["v2.example"]
    assert _tcp_proxy(chain).cluster == f"outbound|9000|v2|{ECHO}"
    assert listener.listener_filters[0].name == "envoy.filters.listener.tls_inspector"
    assert _tcp_proxy(listener.default_filter_chain).cluster == f"outbound|9000||{ECHO}"


def test_inbound_tcp_chains_enforce_authorization_as_network_rbac(world: World) -> None:
    allow = AuthorizationPolicy(
        name="echo",
        selector=WorkloadSelector(match_labels={"app": "tcp-echo"}),
        rules=[Rule(to=[RuleTo(operation=Operation(methods=["GET"]))])],
    )
    w = _world(world, allow)
    inbound = _listeners(w, w.sidecar("tcp-echo-v1-0"))["virtualInbound"]
    chains = [c for c in inbound.filter_chains if c.filter_chain_match.destination_port.value == 9000]
    assert [
        (c.filter_chain_match.transport_protocol, list(c.filter_chain_match.application_protocols)) for c in chains
    ] == [
        ("tls", ["istio-peer-exchange", "istio"])  # STRICT: no plaintext chain
    ]
    rbac = network_rbac.RBAC()
    next(f for f in chains[0].filters if f.name.startswith("envoy.filters.network.rbac")).typed_config.Unpack(rbac)
    assert rbac.rules.action == rbac.rules.ALLOW and not rbac.rules.policies  # an HTTP-only ALLOW rule matches nothing


def test_gateway_passthrough_and_auto_passthrough(world: World) -> None:
    gw = Gateway(
        name="l4",
        selector={"istio": "ingressgateway"},
        servers=[
            Server(
                port=Port(number=9443, name="tls", protocol="TLS"),
                hosts=["echo.example"],
                tls=ServerTLSSettings(mode="PASSTHROUGH"),
            ),
            Server(
                port=Port(number=15443, name="tls-auto", protocol="TLS"),
                hosts=["*.local"],
                tls=ServerTLSSettings(mode="AUTO_PASSTHROUGH"),
            ),
        ],
    )
    vs = VirtualService(
        name="echo-sni",
        hosts=["echo.example"],
        gateways=["l4"],
        tls=[TLSRoute(match=[TLSMatchAttributes(sni_hosts=["echo.example"])], route=[_to("tcp-echo", "v1", 9000)])],
    )
    w = _world(world, gw, vs)
    proxy = gateway_proxy(
        "127.99.0.1", {80: ("127.0.0.1", 8080), 9443: ("127.0.0.1", 9443), 15443: ("127.0.0.1", 15443)}
    )
    snap = w.snapshot(proxy)
    listeners = _listeners(w, proxy)
    (passthrough,) = listeners["0.0.0.0_9443"].filter_chains
    assert list(passthrough.filter_chain_match.server_names) == ["echo.example"]
    assert _tcp_proxy(passthrough).cluster == f"outbound|9000|v1|{ECHO}"
    sni = f"outbound_.9000_.v1_.{ECHO}"
    auto = {c.filter_chain_match.server_names[0]: c for c in listeners["0.0.0.0_15443"].filter_chains}
    assert _tcp_proxy(auto[sni]).cluster == sni
    dnat = snap.resources(rt.CLUSTER).items[sni]
    assert isinstance(dnat, cluster_pb2.Cluster)
    assert dnat.eds_cluster_config.service_name == f"outbound|9000|v1|{ECHO}" and not dnat.HasField("transport_socket")


def test_source_namespace_limits_http_rules_to_callers_in_it(world: World) -> None:
    from mesh.api import HTTPMatchRequest, HTTPRoute
    from mesh.api import helpers as hp
    from mesh.controlplane.simulate import simulate

    vs = VirtualService(
        name="echo",
        hosts=["echo"],
        http=[
            HTTPRoute(match=[HTTPMatchRequest(source_namespace="other")], route=[hp.to("echo", "v2")]),
            HTTPRoute(route=[hp.to("echo", "v1")]),
        ],
    )
    config = MeshConfig(
        services=world.config.services,
        resources=[*(r for r in world.config.resources if r.name != "echo" or r.kind != "VirtualService"), vs],
    )
    hit = simulate(config, "productpage", "http://echo:9080/", {}).hit
    assert hit is not None and list(hit.clusters) == ["outbound|9080|v1|echo.default.svc.cluster.local"]


def test_tcp_and_tls_routes_follow_the_virtual_services_export_to(world: World) -> None:
    """A `tcp`/`tls` VirtualService not exported to the caller's namespace leaves its listener on the service's
    own cluster, as for HTTP routes."""
    sni = VirtualService(
        name="tcp-echo-sni",
        hosts=["tcp-echo"],
        tls=[TLSRoute(match=[TLSMatchAttributes(sni_hosts=["v2.example"])], route=[_to("tcp-echo", "v2")])],
        export_to=["other"],
    )
    w = _world(world, sni)
    hidden = [
        r.model_copy(update={"export_to": ["other"]}) if r.kind == "VirtualService" and r.name == "tcp-echo" else r
        for r in w.config.resources
    ]
    w.config = MeshConfig(services=w.config.services, resources=hidden)
    w.push = PushContext(w.config, w.pods, w.push.options)
    listener = _listeners(w, w.sidecar("productpage-v1-0"))[f"{_vip(w)}_9000"]
    assert not listener.filter_chains  # no SNI chain from the hidden `tls` route
    assert _tcp_proxy(listener.default_filter_chain).cluster == f"outbound|9000||{ECHO}"  # no 80/20 split

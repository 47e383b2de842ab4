"""ServiceEntry / WorkloadEntry translation, the DNS proxy's name table and TLS origination, as Istio builds them
(cluster types by resolution, `outbound|PORT||HOST`, 240.240.0.0/16 auto-allocation, exportTo)."""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from mesh.analyze import analyze
from mesh.api import (
    ClientTLSSettings,
    Destination,
    DestinationRule,
    Gateway,
    HTTPRoute,
    HTTPRouteDestination,
    MeshConfig,
    Port,
    PortSelector,
    PortTrafficPolicy,
    Server,
    ServiceEntry,
    ServiceEntryPort,
    TrafficPolicy,
    VirtualService,
    WorkloadEntry,
    WorkloadSelector,
)
from mesh.controlplane.translate import MeshOptions, PushContext
from mesh.controlplane.xds import resources as rt
from mesh.dataplane.iptables import CaptureRules
from mesh.istio.serviceentries import AUTO_ALLOCATE_RANGE, allocate_addresses
from mesh.targets import capabilities

from .conftest import World

HTTP = ServiceEntryPort(number=80, name="http", protocol="HTTP")
TCP = ServiceEntryPort(number=5432, name="tcp-db", protocol="TCP")


def _world(world: World, *resources: object, **options: object) -> World:
    world.config = MeshConfig(services=list(world.config.services), resources=[*world.config.resources, *resources])  # type: ignore[list-item]
    opts = {"interception": "iptables", "dns_proxy": True, "dns_auto_allocate": True, **options}
    world.push = PushContext(world.config, world.pods, MeshOptions(**opts))  # type: ignore[arg-type]
    return world


def _of(world: World, pod: str, kind: str) -> dict[str, object]:
    return dict(world.snapshot(world.sidecar(pod)).resources(kind).items)


def test_cluster_type_follows_resolution(world: World) -> None:
    entries = [
        ServiceEntry(name="dns", hosts=["api.example.com"], ports=[HTTP], resolution="DNS"),
        ServiceEntry(name="rr", hosts=["rr.example.com"], ports=[HTTP], resolution="DNS_ROUND_ROBIN"),
        ServiceEntry(
            name="static",
            hosts=["vm.example.com"],
            ports=[TCP],
            resolution="STATIC",
            workload_selector=WorkloadSelector(match_labels={"app": "vm"}),
        ),
        WorkloadEntry(name="vm-1", address="10.9.0.7", workload_labels={"app": "vm"}, ports={"tcp-db": 15432}),
        ServiceEntry(name="none", hosts=["*.wild.example.com"], ports=[HTTP], resolution="NONE"),
    ]
    w = _world(world, *entries)
    clusters = _of(w, "productpage-v1-0", rt.CLUSTER)
    kind = {n: c.type for n, c in clusters.items() if isinstance(c, cluster_pb2.Cluster)}
    assert kind["outbound|80||api.example.com"] == cluster_pb2.Cluster.STRICT_DNS
    assert kind["outbound|80||rr.example.com"] == cluster_pb2.Cluster.LOGICAL_DNS
    assert kind["outbound|5432||vm.example.com"] == cluster_pb2.Cluster.EDS
    assert kind["outbound|80||*.wild.example.com"] == cluster_pb2.Cluster.ORIGINAL_DST
    dns = clusters["outbound|80||api.example.com"]
    assert isinstance(dns, cluster_pb2.Cluster)
    target = dns.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (target.address, target.port_value) == ("api.example.com", 80)  # no endpoints: the host itself
    eds = _of(w, "productpage-v1-0", rt.ENDPOINT)["outbound|5432||vm.example.com"]
    ep = eds.endpoints[0].lb_endpoints[0].endpoint.address.socket_address  # type: ignore[attr-defined]
    assert (ep.address, ep.port_value) == ("10.9.0.7", 15432)  # the WorkloadEntry, its port by name


def test_http_ports_get_virtual_hosts_and_tcp_ports_listeners_on_the_allocated_address(world: World) -> None:
    w = _world(
        world,
        ServiceEntry(name="api", hosts=["api.example.com"], ports=[HTTP], resolution="DNS"),
        ServiceEntry(name="db", hosts=["db.example.com"], ports=[TCP], resolution="DNS"),
    )
    routes = _of(w, "productpage-v1-0", rt.ROUTE)["80"]
    assert isinstance(routes, route_pb2.RouteConfiguration)
    vhost = next(v for v in routes.virtual_hosts if v.name == "api.example.com:80")
    assert "api.example.com" in vhost.domains and vhost.routes[0].route.cluster == "outbound|80||api.example.com"
    listeners = _of(w, "productpage-v1-0", rt.LISTENER)
    tcp = [n for n in listeners if n.endswith("_5432")]
    assert len(tcp) == 1 and ipaddress.ip_address(tcp[0].split("_")[0]) in AUTO_ALLOCATE_RANGE


def test_export_to_hides_an_entry_from_other_namespaces(world: World) -> None:
    private = ServiceEntry(
        name="private",
        namespace="other",
        hosts=["private.example.com"],
        ports=[HTTP],
        resolution="DNS",
        export_to=["."],
    )
    clusters = _of(_world(world, private), "productpage-v1-0", rt.CLUSTER)
    assert "outbound|80||private.example.com" not in clusters


def test_auto_allocation_is_stable_unique_and_in_istios_range() -> None:
    hosts = [("default", f"h{i}.example.com") for i in range(2000)]
    first = allocate_addresses(hosts)
    assert first == allocate_addresses(reversed(hosts))  # independent of declaration order
    assert len(set(first.values())) == len(hosts)
    assert all(ipaddress.ip_address(a) in AUTO_ALLOCATE_RANGE and not a.endswith(".0") for a in first.values())
    alone = allocate_addresses(hosts[:1])[hosts[0]]
    assert alone == allocate_addresses(hosts[:1])[hosts[0]]  # stable from push to push
    # Istio's own expectation for `foo.com` (key "/foo.com", its servicediscovery tests): the same hash and slots
    assert allocate_addresses([("", "foo.com")]) == {("", "foo.com"): "240.240.227.81"}


def test_the_dns_proxy_table_has_service_vips_and_entry_addresses(world: World) -> None:
    w = _world(
        world,
        ServiceEntry(name="api", hosts=["api.example.com"], ports=[HTTP], resolution="DNS"),
        ServiceEntry(
            name="fixed", hosts=["fixed.example.com"], addresses=["192.0.2.10"], ports=[HTTP], resolution="DNS"
        ),
        service_vips=(("ratings.default.svc.cluster.local", "10.1.255.4"),),
        dns_upstream="10.1.0.1:53",
    )
    dns = _of(w, "productpage-v1-0", rt.LISTENER)["dns"]
    assert isinstance(dns, listener_pb2.Listener)
    assert dns.address.socket_address.port_value == 15053
    config = dns_filter_pb2.DnsFilterConfig()
    dns.listener_filters[0].typed_config.Unpack(config)
    table = {
        d.name: list(d.endpoint.address_list.address) for d in config.server_config.inline_dns_table.virtual_domains
    }
    assert table["ratings.default.svc.cluster.local"] == ["10.1.255.4"]
    assert table["fixed.example.com"] == ["192.0.2.10"]
    assert ipaddress.ip_address(table["api.example.com"][0]) in AUTO_ALLOCATE_RANGE
    assert config.client_config.typed_dns_resolver_config.name == "envoy.network.dns_resolver.cares"


def test_no_dns_listener_without_dns_proxying(world: World) -> None:
    assert "dns" not in _of(_world(world, dns_proxy=False), "productpage-v1-0", rt.LISTENER)


def test_iptables_capture_dns_only_for_the_app() -> None:
    rules = CaptureRules(dns_port=15053).restore_input()
    assert "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports 15053" in rules
    assert "ISTIO_OUTPUT_DNS" not in CaptureRules().restore_input()


def test_simple_and_mutual_origination(world: World) -> None:
    se = ServiceEntry(name="api", hosts=["api.example.com"], ports=[HTTP], resolution="DNS")
    dr = DestinationRule(
        name="api",
        host="api.example.com",
        traffic_policy=TrafficPolicy(
            port_level_settings=[
                PortTrafficPolicy(
                    port=PortSelector(number=80),
                    tls=ClientTLSSettings(
                        mode="MUTUAL", credential_name="api-client", subject_alt_names=["api.example.com"]
                    ),
                )
            ]
        ),
    )
    w = _world(world, se, dr)
    cluster = _of(w, "productpage-v1-0", rt.CLUSTER)["outbound|80||api.example.com"]
    assert isinstance(cluster, cluster_pb2.Cluster)
    ctx = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(ctx)
    assert ctx.sni == "api.example.com"
    assert ctx.common_tls_context.tls_certificate_sds_secret_configs[0].name == "kubernetes://api-client"
    combined = ctx.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://api-client-cacert"
    assert combined.default_validation_context.match_typed_subject_alt_names[0].matcher.exact == "api.example.com"
    secrets = _of(w, "productpage-v1-0", rt.SECRET)  # the sidecar's SDS serves the credential it names
    assert {"kubernetes://api-client", "kubernetes://api-client-cacert"} <= set(secrets)


def test_local_analysis_accepts_what_is_translated_and_names_what_is_not() -> None:
    config = MeshConfig().add(
        ServiceEntry(name="api", hosts=["api.example.com"], ports=[HTTP], resolution="DNS"),
        WorkloadEntry(name="vm", address="10.9.0.7", locality="us/east"),
    )
    msh = [f for f in analyze(config, capabilities("local")) if f.code == "MSH0100"]
    assert [f.path for f in msh] == ["spec.locality"]


def test_simple_origination_to_a_mesh_service(world: World) -> None:
    """SIMPLE on a mesh service's DestinationRule replaces auto mTLS with TLS verified against caCertificates."""
    dr = DestinationRule(
        name="a-ratings-tls",  # chosen over the e2e policies' own rule for ratings (first by name)
        host="ratings",
        traffic_policy=TrafficPolicy(tls=ClientTLSSettings(mode="SIMPLE", ca_certificates="/etc/certs/ca.pem")),
    )
    cluster = _of(_world(world, dr), "productpage-v1-0", rt.CLUSTER)["outbound|9080||ratings.default.svc.cluster.local"]
    assert isinstance(cluster, cluster_pb2.Cluster)
    ctx = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(ctx)
    assert ctx.sni == "ratings.default.svc.cluster.local"
    assert ctx.common_tls_context.validation_context.trusted_ca.filename == "/etc/certs/ca.pem"
    assert not ctx.common_tls_context.tls_certificate_sds_secret_configs  # no client certificate, no mesh SVID


def test_the_local_target_provides_the_egress_gateway_kubernetes_does_not() -> None:
    """Analysis agrees with the runtime: locally a Gateway selecting `istio: egressgateway` starts it and its
    Service exists; on Kubernetes nothing here installs one, so the selector and the host are unknown (IST0101)."""
    gw = Gateway(
        name="egress",
        namespace="istio-system",
        selector={"istio": "egressgateway"},
        servers=[Server(port=Port(number=80, name="http", protocol="HTTP"), hosts=["api.example.com"])],
    )
    vs = VirtualService(
        name="via-egress",
        hosts=["api.example.com"],
        gateways=["mesh", "istio-system/egress"],
        http=[
            HTTPRoute(
                route=[
                    HTTPRouteDestination(
                        destination=Destination(host="istio-egressgateway.istio-system.svc.cluster.local")
                    )
                ]
            )
        ],
    )
    se = ServiceEntry(name="api", hosts=["api.example.com"], ports=[HTTP], resolution="DNS")
    config = MeshConfig().add(gw, vs, se)
    assert not [f for f in analyze(config, capabilities("local")) if f.code == "IST0101"]
    assert {f.resource for f in analyze(config, capabilities("kubernetes")) if f.code == "IST0101"} == {
        "Gateway istio-system/egress",
        "VirtualService default/via-egress",
    }

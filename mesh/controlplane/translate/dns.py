"""The sidecar's DNS proxy (Istio's `pkg/dns`, the agent's name table fed by NDS), built from Envoy's own
`envoy.filters.udp.dns_filter` on a UDP listener `dns` at 127.0.0.1:15053: the pod's rules send its UDP port-53
traffic there (`mesh.dataplane.iptables`), so the name table travels over LDS like any other config and changes
with every push, with no process beside Envoy in the pod.

The table holds what Istio's does: every service's FQDN -> its VIP, and every ServiceEntry host visible to the
proxy's namespace -> its declared or auto-allocated address. Short names resolve through the search domains of
the pod's resolv.conf. Names not in the table go to the upstream resolver (the test world's), which answers or
says NXDOMAIN.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, extension_pb2, resolver_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.data.dns.v3 import dns_table_pb2
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2

from mesh.controlplane.translate.context import PushContext
from mesh.controlplane.translate.protos import duration, packed
from mesh.controlplane.translate.serviceentry import visible_entries
from mesh.runtime import Proxy, pod_dns_names

DNS_LISTENER = "dns"
DNS_FILTER = "envoy.filters.udp.dns_filter"
DNS_PROXY_ADDRESS = "127.0.0.1"
DNS_PROXY_PORT = 15053  # Istio's agent DNS port
ANSWER_TTL = 30.0  # seconds, as Istio's DNS proxy answers


def name_table(push: PushContext, proxy: Proxy) -> dict[str, list[str]]:
    """name -> addresses, as the proxy's DNS answers."""
    table = {name: [vip] for name, vip in push.options.service_vips}
    table.update(headless_names(push))
    for e in visible_entries(push, proxy.namespace):
        if e.address and not e.host.startswith("*"):
            table.setdefault(e.host, [e.address])
    return table


def headless_names(push: PushContext) -> dict[str, list[str]]:
    """Istio's entries for a headless service (no VIP): its name -> every pod's address, and each pod's own
    StatefulSet name (`<pod>.<service>.<namespace>.svc.cluster.local`) -> that pod."""
    out: dict[str, list[str]] = {}
    for view in push.services.values():
        if view.service.headless and view.pods:
            out[view.fqdn] = sorted(p.ip for p in view.pods)
            out.update({pod_dns_names(p, p.namespace)[0]: [p.ip] for p in view.pods})
    return out


def dns_listener(push: PushContext, proxy: Proxy) -> listener_pb2.Listener:
    table = dns_table_pb2.DnsTable(
        virtual_domains=[
            dns_table_pb2.DnsTable.DnsVirtualDomain(
                name=name,
                endpoint=dns_table_pb2.DnsTable.DnsEndpoint(
                    address_list=dns_table_pb2.DnsTable.AddressList(address=ips)
                ),
                answer_ttl=duration(ANSWER_TTL),
            )
            for name, ips in sorted(name_table(push, proxy).items())
        ]
    )
    config = dns_filter_pb2.DnsFilterConfig(
        stat_prefix="dns", server_config=dns_filter_pb2.DnsFilterConfig.ServerContextConfig(inline_dns_table=table)
    )
    if push.options.dns_upstream:
        ip, _, port = push.options.dns_upstream.rpartition(":")
        cares = cares_dns_resolver_pb2.CaresDnsResolverConfig(
            resolvers=[address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=int(port)))],
            dns_resolver_options=resolver_pb2.DnsResolverOptions(no_default_search_domain=True),
        )
        config.client_config.resolver_timeout.CopyFrom(duration(2.0))
        config.client_config.max_pending_lookups = 256
        config.client_config.typed_dns_resolver_config.CopyFrom(
            extension_pb2.TypedExtensionConfig(name="envoy.network.dns_resolver.cares", typed_config=packed(cares))
        )
    return listener_pb2.Listener(
        name=DNS_LISTENER,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                protocol=address_pb2.SocketAddress.UDP, address=DNS_PROXY_ADDRESS, port_value=DNS_PROXY_PORT
            )
        ),
        listener_filters=[lc.ListenerFilter(name=DNS_FILTER, typed_config=packed(config))],
        traffic_direction=2,  # OUTBOUND
    )

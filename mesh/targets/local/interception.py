"""How apps reach their sidecars in the local mesh: `proxy` (HTTP_PROXY on loopback addresses, runs anywhere) or
`iptables` (Istio's transparent capture: a network namespace per pod, `istio-iptables` rules, Envoy as uid 1337).

`choose()` picks the mode and says why; `CapturedPods` builds and removes the pod network of one run and turns a
process spec into one that runs inside its pod.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from mesh.api.config import MeshConfig
from mesh.api.workloads import Service
from mesh.dataplane import netns
from mesh.dataplane.dns import UpstreamResolver
from mesh.dataplane.iptables import PROXY_UID, CaptureRules, confinement, install
from mesh.errors import TargetError
from mesh.istio import DOMAIN_SUFFIX
from mesh.istio.protocol import routed_as_connections
from mesh.runtime import Pod, pod_dns_names

log = logging.getLogger("mesh.local")
RECORDS = "netns-runs"  # under the state dir: one record per run that made a pod network
DNS_PROXY_PORT = 15053  # the sidecar's DNS listener (Istio's agent port), as the control plane configures it

Mode = Literal["proxy", "iptables"]


def choose(requested: str) -> tuple[Mode, str]:
    """The mode to run and why: `auto` takes iptables where namespaces can be made, else HTTP_PROXY."""
    ok, why = netns.available()
    if requested == "proxy":
        return (
            "proxy",
            "apps reach their sidecar through HTTP_PROXY; `--interception iptables` captures transparently (root)",
        )
    if requested == "iptables":
        if not ok:
            raise TargetError(
                f"--interception iptables is not possible here: {why}",
                hint="run as root on Linux with iproute2 and iptables installed, or use --interception proxy",
            )
        return "iptables", "--interception iptables: a network namespace per pod, Istio's iptables rules"
    if ok:
        return "iptables", f"auto: {why}"
    return "proxy", f"auto: {why}; apps reach their sidecar through HTTP_PROXY"


def check_mode(mode: Mode, config: MeshConfig) -> None:
    """HTTP_PROXY carries HTTP only: a config that routes connections needs transparent interception."""
    needs = routed_as_connections(config)
    if mode == "proxy" and needs:
        raise TargetError(
            f"TCP and TLS routing need `--interception iptables` (this mesh runs HTTP_PROXY): {'; '.join(needs)}",
            hint="run `mesh up --interception iptables` (root, Linux), or give these ports an HTTP protocol "
            "(a name like `http-...` or appProtocol: http)",
        )


class CapturedPods:
    """One run's pod network: bridge, subnet, a namespace per pod with Istio's capture rules, and the test world's
    DNS server on the bridge (`mesh.dataplane.dns.UpstreamResolver`: it knows only hosts made in namespaces here).

    Names: with DNS proxying each pod's resolv.conf points at that server and its rules hand the queries to its
    sidecar's DNS, which answers service and ServiceEntry names; without, a hosts file per pod names every
    service's VIP (what cluster DNS would answer)."""

    def __init__(self, state_dir: Path | None = None, *, dns_proxy: bool = False) -> None:
        records = state_dir / RECORDS if state_dir is not None else None
        self.removed_stale = remove_stale_networks(state_dir) if state_dir is not None else []
        self.net = netns.PodNetwork(netns.free_subnet())
        self.vips: dict[str, str] = {}  # service fqdn -> VIP
        self.dns_proxy = dns_proxy
        self.external: dict[str, tuple[str, str]] = {}  # test host name -> (ip, namespace)
        self.net.create_bridge(records)
        self.resolver = UpstreamResolver(self.net.host_ip)

    @property
    def host_ip(self) -> str:
        return self.net.host_ip

    @property
    def telemetry_ip(self) -> str:
        """Where the mesh's telemetry (collector, Prometheus) listens: the host's address on this run's bridge, the one
        host address its pods reach (their rules let the proxy user through to the pod subnet only), and no
        interface beyond the host and this run's pods."""
        return self.net.host_ip

    def next_pod(self) -> tuple[str, str]:
        """(pod ip, app ip): the app listens on the pod's own address; only its sidecar's rules stand before it."""
        ip = self.net.next_pod_ip()
        return ip, ip

    @property
    def dns_upstream(self) -> str:
        """`ip:port` of the test world's DNS server: where sidecars' DNS proxies send names they do not know."""
        ip, port = self.resolver.address
        return f"{ip}:{port}"

    def resolv_conf(self, namespace: str) -> str:
        """A Kubernetes pod's resolv.conf: the cluster's DNS server, search domains of the pod's namespace."""
        search = f"{namespace}.svc.{DOMAIN_SUFFIX} svc.{DOMAIN_SUFFIX} {DOMAIN_SUFFIX}"
        return f"nameserver {self.net.host_ip}\nsearch {search}\noptions ndots:5 timeout:2 attempts:2\n"

    def add_pods(self, pods: Iterable[Pod], services: Iterable[Service]) -> None:
        services = sorted(services, key=lambda s: s.fqdn)
        pods = list(pods)
        for s in services:
            if not s.headless:
                self.vips[s.fqdn] = self.net.next_vip()
        rules = CaptureRules(
            allowed_subnet=str(self.net.subnet),
            blocked=(str(self.net.vip_range),),
            dns_port=DNS_PROXY_PORT if self.dns_proxy else None,
        )
        for pod in pods:
            hosts: dict[str, list[str]] = {}
            if not self.dns_proxy:
                hosts = {self.vips[s.fqdn]: _names(s, pod.namespace) for s in services if not s.headless}
                hosts.update(_headless_names(pods, services, pod.namespace))
            ns = self.net.add_pod(pod.name, pod.ip, hosts, self.resolv_conf(pod.namespace))
            install(ns, rules)

    def add_gateway(self, name: str, namespace: str) -> str:
        """A namespace for a gateway (the egress gateway): an address on the bridge, no capture (Istio does not
        capture gateways), confined to the mesh's subnet. Returns its IP."""
        ip = self.net.next_pod_ip()
        ns = self.net.add_pod(name, ip, {}, self.resolv_conf(namespace))
        install(ns, confinement(str(self.net.subnet)))
        # the proxy user binds its servers' ports (80, 443) in this namespace only (a per-namespace sysctl)
        netns.run("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start", netns=ns)
        return ip

    def add_external(self, name: str) -> tuple[str, str]:
        """An "external" host for tests: a namespace of its own on the bridge, outside the mesh (no sidecar, no
        capture), its name answered by the test world's DNS. Returns (ip, namespace)."""
        ip = self.net.next_pod_ip()
        ns = self.net.add_pod(f"external-{name}", ip, {}, self.resolv_conf("default"))
        install(ns, confinement(str(self.net.subnet)))
        self.resolver.add(name, ip)
        self.external[name] = (ip, ns)
        return ip, ns

    def namespace(self, pod: str) -> str:
        return self.net.namespaces[pod]

    def app_argv(self, pod: Pod, argv: list[str]) -> list[str]:
        return netns.exec_argv(self.namespace(pod.name), argv)

    def app_ready(self, pod: Pod, port: int) -> bool:
        """The app itself answers (probed from inside its pod: the pod's own traffic to itself is not captured)."""
        return netns.tcp_ready_in(self.namespace(pod.name), pod.ip, port)

    def envoy_argv(self, pod: Pod | str, argv: list[str], bootstrap: dict[str, Any], log_path: Path) -> list[str]:
        """Envoy inside the pod as uid 1337 (its own traffic is what the rules leave alone). The bootstrap goes on
        the command line: the state directory is not readable by that user. Its log file becomes its own, so
        `/dev/stdout` access logs can be reopened."""
        i = argv.index("-c")
        argv = [*argv[:i], "--config-yaml", json.dumps(bootstrap), *argv[i + 2 :]]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        os.chown(log_path, PROXY_UID, PROXY_UID)
        return netns.exec_argv(self.namespace(pod if isinstance(pod, str) else pod.name), argv, uid=PROXY_UID)

    def share(self, private_dir: Path, xds_socket: Path) -> None:
        """The owner-only directory, opened to the proxy user's group only: its Envoys reach the xDS socket and
        create their admin sockets there (Envoy makes those owner-only; the mesh, as root, still reaches them)."""
        os.chown(private_dir, 0, PROXY_UID)
        private_dir.chmod(0o770)
        os.chown(xds_socket, 0, PROXY_UID)
        xds_socket.chmod(0o660)

    def destroy(self) -> None:
        self.resolver.stop()
        self.net.destroy()


def _headless_names(pods: list[Pod], services: list[Service], client_namespace: str) -> dict[str, list[str]]:
    """What cluster DNS answers for headless services: each pod's own names, and the service's name for every
    one of its pods (no VIP: the client connects to a pod, its sidecar routes by that original destination)."""
    out: dict[str, list[str]] = {}
    for s in services:
        if s.headless:
            for p in pods:
                if p.service == s.name and p.namespace == s.namespace:
                    out[p.ip] = [*pod_dns_names(p, client_namespace), *_names(s, client_namespace)]
    return out


def remove_stale_networks(state_dir: Path) -> list[str]:
    """Pod networks (namespaces, bridge) that meshes of this state dir left when they were killed (SIGKILL skips
    `destroy`): removed on the next `mesh up` or `mesh down`. Runs whose mesh process lives are left alone."""
    records = state_dir / RECORDS
    if not records.is_dir() or not netns.available()[0]:
        return []
    stale = netns.remove_stale(records)
    if stale:
        log.info("removed the pod networks of killed meshes: %s", ", ".join(f"mb{r}" for r in stale))
    return stale


def _names(service: Service, client_namespace: str) -> list[str]:
    names = [service.fqdn, f"{service.name}.{service.namespace}.svc", f"{service.name}.{service.namespace}"]
    if service.namespace == client_namespace:
        names.append(service.name)
    return names

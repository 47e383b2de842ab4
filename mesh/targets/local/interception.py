"""How apps reach their sidecars in the local mesh: `proxy` (HTTP_PROXY on loopback addresses, runs anywhere) or
`iptables` (Istio's transparent capture: a network namespace per pod, `istio-iptables` rules, Envoy as uid 1337).

`choose()` picks the mode and says why; `CapturedPods` builds and removes the pod network of one run and turns a
process spec into one that runs inside its pod.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from mesh.api.config import MeshConfig
from mesh.api.workloads import Service
from mesh.dataplane import netns
from mesh.dataplane.iptables import PROXY_UID, CaptureRules, install
from mesh.errors import TargetError
from mesh.istio.protocol import routed_as_connections
from mesh.runtime import Pod

Mode = Literal["proxy", "iptables"]


def choose(requested: str) -> tuple[Mode, str]:
    """The mode to run and why: `auto` takes iptables where namespaces can be made, else HTTP_PROXY."""
    ok, why = netns.available()
    if requested == "proxy":
        return "proxy", "requested (--interception proxy)"
    if requested == "iptables":
        if not ok:
            raise TargetError(
                f"--interception iptables is not possible here: {why}",
                hint="run as root on Linux with iproute2 and iptables installed, or use --interception proxy",
            )
        return "iptables", "requested (--interception iptables)"
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
    """One run's pod network: bridge, subnet, a namespace per pod with Istio's capture rules and a hosts file
    naming every service's VIP (what cluster DNS would answer)."""

    def __init__(self) -> None:
        self.net = netns.PodNetwork(netns.free_subnet())
        self.vips: dict[str, str] = {}  # service fqdn -> VIP
        self.net.create_bridge()

    @property
    def host_ip(self) -> str:
        return self.net.host_ip

    def next_pod(self) -> tuple[str, str]:
        """(pod ip, app ip): the app listens on the pod's own address; only its sidecar's rules stand before it."""
        ip = self.net.next_pod_ip()
        return ip, ip

    def add_pods(self, pods: Iterable[Pod], services: Iterable[Service]) -> None:
        services = sorted(services, key=lambda s: s.fqdn)
        for s in services:
            self.vips[s.fqdn] = self.net.next_vip()
        rules = CaptureRules(allowed_subnet=str(self.net.subnet), blocked=(str(self.net.vip_range),))
        for pod in pods:
            hosts = {self.vips[s.fqdn]: _names(s, pod.namespace) for s in services}
            ns = self.net.add_pod(pod.name, pod.ip, hosts)
            install(ns, rules)

    def namespace(self, pod: str) -> str:
        return self.net.namespaces[pod]

    def app_argv(self, pod: Pod, argv: list[str]) -> list[str]:
        return netns.exec_argv(self.namespace(pod.name), argv)

    def app_ready(self, pod: Pod, port: int) -> bool:
        """The app itself answers (probed from inside its pod: the pod's own traffic to itself is not captured)."""
        return netns.tcp_ready_in(self.namespace(pod.name), pod.ip, port)

    def envoy_argv(self, pod: Pod, argv: list[str], bootstrap: dict[str, Any], log_path: Path) -> list[str]:
        """Envoy inside the pod as uid 1337 (its own traffic is what the rules leave alone). The bootstrap goes on
        the command line: the state directory is not readable by that user. Its log file becomes its own, so
        `/dev/stdout` access logs can be reopened."""
        i = argv.index("-c")
        argv = [*argv[:i], "--config-yaml", json.dumps(bootstrap), *argv[i + 2 :]]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        os.chown(log_path, PROXY_UID, PROXY_UID)
        return netns.exec_argv(self.namespace(pod.name), argv, uid=PROXY_UID)

    def share(self, private_dir: Path, xds_socket: Path) -> None:
        """The owner-only directory, opened to the proxy user's group only: its Envoys reach the xDS socket and
        create their admin sockets there (Envoy makes those owner-only; the mesh, as root, still reaches them)."""
        os.chown(private_dir, 0, PROXY_UID)
        private_dir.chmod(0o770)
        os.chown(xds_socket, 0, PROXY_UID)
        xds_socket.chmod(0o660)

    def destroy(self) -> None:
        self.net.destroy()


def _names(service: Service, client_namespace: str) -> list[str]:
    names = [service.fqdn, f"{service.name}.{service.namespace}.svc", f"{service.name}.{service.namespace}"]
    if service.namespace == client_namespace:
        names.append(service.name)
    return names

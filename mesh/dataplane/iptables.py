"""The rules Istio's `istio-iptables` installs in a pod's network namespace, as `iptables-restore` input.

nat: inbound TCP -> the sidecar's 15006 (except excluded ports), outbound TCP -> 15001, the proxy's own traffic
(its UID and GID) left alone, except the proxy talking to its own pod over loopback, which is inbound again;
`127.0.0.6` is the source the proxy uses to reach its app, never redirected. With DNS proxying the app's UDP
port-53 queries go to the proxy's DNS listener (15053); the proxy's own lookups are left alone.

filter (ours, not Istio's): traffic that escaped capture may only go to the mesh's own subnet, and never to a
service VIP (a VIP answers only through a sidecar), so nothing a pod sends leaves the namespaces the mesh made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PROXY_UID = 1337  # Istio's istio-proxy user
INBOUND_CAPTURE_PORT = 15006
OUTBOUND_CAPTURE_PORT = 15001
INBOUND_PASSTHROUGH_SOURCE = "127.0.0.6"
# Istio excludes 15008 (HBONE), 15090 (Prometheus), 15021 (health), 15020 (agent); 15000 is our admin address,
# reachable from the host for readiness and `mesh proxy-config` (Istio binds it to 127.0.0.1 instead)
EXCLUDED_INBOUND_PORTS = (15000, 15008, 15020, 15021, 15090)


@dataclass(frozen=True)
class CaptureRules:
    proxy_uid: int = PROXY_UID
    inbound_port: int = INBOUND_CAPTURE_PORT
    outbound_port: int = OUTBOUND_CAPTURE_PORT
    excluded_inbound: tuple[int, ...] = EXCLUDED_INBOUND_PORTS
    allowed_subnet: str = ""  # where uncaptured traffic may go (the pod subnet); empty: anywhere
    blocked: tuple[str, ...] = ()  # never reached uncaptured (service VIPs)
    dns_port: int | None = None  # DNS proxying: the app's UDP port-53 queries go to the sidecar's DNS (15053)

    def nat(self) -> list[str]:
        uid = str(self.proxy_uid)
        out = [
            "*nat",
            ":ISTIO_INBOUND - [0:0]",
            ":ISTIO_IN_REDIRECT - [0:0]",
            ":ISTIO_OUTPUT - [0:0]",
            ":ISTIO_REDIRECT - [0:0]",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        ]
        if self.dns_port is not None:  # Istio's DNS capture: the proxy's own lookups go out, the app's to the proxy
            out[1:1] = [":ISTIO_OUTPUT_DNS - [0:0]"]
            out += [
                "-A OUTPUT -p udp --dport 53 -j ISTIO_OUTPUT_DNS",
                f"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner {uid} -j RETURN",
                f"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner {uid} -j RETURN",
                f"-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-ports {self.dns_port}",
            ]
        out += [f"-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN" for p in self.excluded_inbound]
        out += [
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {self.inbound_port}",
            f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {self.outbound_port}",
            f"-A ISTIO_OUTPUT -s {INBOUND_PASSTHROUGH_SOURCE}/32 -o lo -j RETURN",
        ]
        for owner in ("--uid-owner", "--gid-owner"):
            out += [
                f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m owner {owner} {uid} -j ISTIO_IN_REDIRECT",
                f"-A ISTIO_OUTPUT -o lo -m owner ! {owner} {uid} -j RETURN",
                f"-A ISTIO_OUTPUT -m owner {owner} {uid} -j RETURN",
            ]
        out += ["-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN", "-A ISTIO_OUTPUT -j ISTIO_REDIRECT", "COMMIT"]
        return out

    def filter(self) -> list[str]:
        # redirected connections (to the sidecar) carry a DNAT conntrack state: those are captured, not escaping
        out = ["*filter", "-A OUTPUT -o lo -j ACCEPT", "-A OUTPUT -m conntrack --ctstate DNAT -j ACCEPT"]
        out += [f"-A OUTPUT -d {b} -j REJECT" for b in self.blocked]
        if self.allowed_subnet:
            out += [f"-A OUTPUT -d {self.allowed_subnet} -j ACCEPT", "-A OUTPUT -j REJECT"]
        return [*out, "COMMIT"]

    def restore_input(self) -> str:
        return "\n".join([*self.nat(), *self.filter()]) + "\n"


def confinement(allowed_subnet: str) -> str:
    """A namespace that is not captured (a gateway's, a test host's) may still only reach the mesh's subnet."""
    lines = ["*filter", "-A OUTPUT -o lo -j ACCEPT", f"-A OUTPUT -d {allowed_subnet} -j ACCEPT", "-A OUTPUT -j REJECT"]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def install(ns: str, rules: CaptureRules | str) -> None:
    """Load `rules` into namespace `ns` (its tables start empty: namespaces share no rules with the host)."""
    from mesh.dataplane.netns import run

    run("iptables-restore", netns=ns, stdin=rules if isinstance(rules, str) else rules.restore_input())


def listed(ns: str, tables: Iterable[str] = ("nat", "filter")) -> str:
    from mesh.dataplane.netns import run

    return "".join(run("iptables-save", "-t", t, netns=ns) for t in tables)

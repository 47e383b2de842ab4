"""Requests sent from inside a pod's network namespace (transparent capture): the pod's iptables rules take them
to its sidecar exactly as they take its app's, and names resolve as its app resolves them (hosts file, else DNS).

One connection per request, so a split is measured per request, never pinned by keep-alive.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from mesh.dataplane.dns import NOERROR, resolve_over
from mesh.dataplane.netns import ETC_NETNS, connect_in, entered
from mesh.targets.traffic import Reply


def resolve_in(ns: str, name: str, timeout: float = 2.0) -> str:
    """`name` resolved as the pod's app resolves it: its hosts file, else DNS to its resolv.conf's server with its
    search domains, sent from inside the pod (so its rules take the query to its sidecar's DNS proxy when DNS
    proxying is on). A name nothing answers stays as given (an IP literal, say)."""
    known = hosts_file(ns).get(name)
    if known:
        return known
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        pass
    conf = ETC_NETNS / ns / "resolv.conf"
    if not conf.exists():
        return name
    server, search = "", [""]
    for line in conf.read_text().splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and not server:
            server = words[1]
        elif words[:1] == ["search"]:
            search = [*words[1:], ""]
    candidates = [f"{name}.{d}" if d else name for d in (search if name.count(".") < 5 else [""])]
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for candidate in candidates:
            rcode, addresses = resolve_over(sock, (server, 53), candidate, timeout)
            if rcode == NOERROR and addresses:
                return addresses[0]
    return name


def hosts_file(ns: str) -> dict[str, str]:
    """name -> address from the pod's hosts file (what its app resolves)."""
    out: dict[str, str] = {}
    path = ETC_NETNS / ns / "hosts"
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        for name in words[1:]:
            out.setdefault(name, words[0])
    return out


class _PodConnection(http.client.HTTPConnection):
    def __init__(self, ns: str, address: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ns, self._address = ns, address

    def connect(self) -> None:
        self.sock = connect_in(self._ns, self._address, self.port, self.timeout or 15.0)


@dataclass
class PodClient:
    """A client inside namespace `ns`: `get("http://reviews:9080/")` as the pod's app would send it."""

    ns: str
    timeout: float = 15.0

    def get(self, path: str, headers: dict[str, str] | None = None, *, host: str | None = None) -> Reply:
        return self.request("GET", path, headers, host=host)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, host: str | None = None
    ) -> Reply:
        url = urlsplit(path)
        name, port = url.hostname or "", url.port or 80
        address = resolve_in(self.ns, name)
        h = {"Host": host or (url.netloc or name), **(headers or {})}
        conn = _PodConnection(self.ns, address, name, port, self.timeout)
        t0 = time.perf_counter()
        try:
            conn.request(method, (url.path or "/") + (f"?{url.query}" if url.query else ""), headers=h)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        elapsed = time.perf_counter() - t0
        text = data.decode(errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return Reply(r.status, dict(r.getheaders()), body, text, elapsed)

"""Requests sent from inside a pod's network namespace (transparent capture): the pod's iptables rules take them
to its sidecar exactly as they take its app's, and names resolve through the pod's own hosts file.

One connection per request, so a split is measured per request, never pinned by keep-alive.
"""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from mesh.dataplane.netns import ETC_NETNS, connect_in
from mesh.targets.traffic import Reply


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
        address = hosts_file(self.ns).get(name, name)
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

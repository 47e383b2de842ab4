"""A test bed for the edge: gateway-replica Envoys with static configs, an echo upstream, and steady load.

Used by the edge's e2e tests and its benchmark; real processes throughout (Envoy, HAProxy, a Python upstream).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from mesh.dataplane import envoy
from mesh.dataplane.supervisor import ProcessSpec, Supervisor
from mesh.edge.config import Replica
from mesh.envoyjson import socket_address, static_cluster

HEALTH_PATH = "/healthz/ready"


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with what it saw: the peer address and the request headers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "peer": self.client_address[0],
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_echo(host: str, port: int) -> None:
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, port), EchoHandler).serve_forever()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            return False

    return check


def gateway_bootstrap(ip: str, port: int, admin_port: int, upstream: tuple[str, int] | None) -> dict[str, Any]:
    """A gateway Envoy as the mesh's ingress gateway is at the edge's side: an HTTP listener that trusts one hop
    of X-Forwarded-For (the edge), a readiness route, everything else to the upstream (a direct 200 when there is
    none: what a benchmark of the proxies alone wants)."""
    rest: dict[str, Any] = (
        {"route": {"cluster": "upstream", "timeout": "10s"}}
        if upstream
        else {"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    )
    route_config = {
        "virtual_hosts": [
            {
                "name": "all",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"path": HEALTH_PATH},
                        "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                    },
                    {"match": {"prefix": "/"}, **rest},
                ],
            }
        ]
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "use_remote_address": True,
        "xff_num_trusted_hops": 1,
        "route_config": route_config,
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "node": {"id": f"gateway~{ip}", "cluster": "edge-test"},
        "admin": {"address": {"socket_address": {"address": ip, "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": ip, "port_value": port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [] if upstream is None else [static_cluster("upstream", socket_address(*upstream))],
        },
    }


@dataclass
class Gateways:
    """N gateway Envoys and their echo upstream, supervised (a SIGKILLed replica is restarted)."""

    supervisor: Supervisor
    replicas: list[Replica]
    upstream: tuple[str, int]

    def process(self, replica: Replica) -> str:
        return f"envoy/{replica.name}"


@contextmanager
def gateways(run_dir: Path, n: int, block: int, *, echo: bool = True, concurrency: int = 1) -> Iterator[Gateways]:
    """Replica k listens on 127.<block>.0.<k+1>:8080 (admin :15000); the echo upstream on 127.<block>.1.1
    (without `echo` the gateways answer 200 themselves)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    upstream = (f"127.{block}.1.1", 9080)
    specs = []
    if echo:
        code = f"from mesh.edge.testing import serve_echo; serve_echo({upstream[0]!r}, {upstream[1]})"
        specs.append(
            ProcessSpec(
                name="echo",
                argv=[sys.executable, "-c", code],
                log_path=run_dir / "echo.log",
                ready=tcp_ready(*upstream),
            )
        )
    replicas = []
    for k in range(n):
        ip = f"127.{block}.0.{k + 1}"
        replica = Replica(name=f"gw{k}", host=ip, port=8080)
        path = envoy.write_bootstrap(
            run_dir / f"envoy-{replica.name}.json", gateway_bootstrap(ip, 8080, 15000, upstream if echo else None)
        )
        specs.append(
            ProcessSpec(
                name=f"envoy/{replica.name}",
                argv=envoy.command(path, concurrency=concurrency),
                log_path=run_dir / f"envoy-{replica.name}.log",
                ready=envoy.Admin(ip, 15000).ready,
                kind="envoy",
            )
        )
        replicas.append(replica)
    supervisor = Supervisor(on_event=lambda msg: None)
    supervisor.start(specs, timeout=30)
    try:
        yield Gateways(supervisor, replicas, upstream)
    finally:
        supervisor.stop()


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)

    @property
    def failed(self) -> int:
        """Requests that did not get a 2xx: connection errors and non-2xx answers."""
        return len(self.errors) + sum(c for s, c in self.statuses.items() if not 200 <= s < 300)


class Load:
    """`workers` threads each sending requests back to back (one keep-alive session each) until stopped."""

    def __init__(
        self,
        url: str,
        workers: int = 4,
        *,
        verify: str | bool = True,
        headers: dict[str, str] | None = None,
        sni: str | None = None,
        proxy: str | None = None,
    ) -> None:
        self.url = url
        self.sni = sni
        self.proxies = {"http": proxy} if proxy else None
        self.workers = workers
        self.verify = verify
        self.headers = headers or {}
        self.result = LoadResult()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self) -> None:
        session = requests.Session()
        session.trust_env = False
        if self.sni:  # TLS to an address, verified as the name (the name need not resolve here)
            adapter = requests.adapters.HTTPAdapter()
            adapter.init_poolmanager(10, 10, server_hostname=self.sni)
            session.mount("https://", adapter)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                r = session.get(self.url, timeout=5, verify=self.verify, headers=self.headers, proxies=self.proxies)
                status, error = r.status_code, None
            except requests.RequestException as e:
                status, error = 0, f"{type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
            with self._lock:
                if error is not None:
                    self.result.errors.append(error)
                else:
                    self.result.statuses[status] += 1
                    self.result.latencies.append(dt)

    def count(self) -> int:
        with self._lock:
            return self.result.total

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def wait_for(self, requests_more: int, timeout: float = 30.0) -> None:
        """Block until `requests_more` further requests completed (a real signal, not a sleep)."""
        target = self.count() + requests_more
        deadline = time.monotonic() + timeout
        while self.count() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"load made {self.count()} of {target} requests in {timeout:.0f}s")
            time.sleep(0.01)

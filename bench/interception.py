"""The cost of transparent interception: one request from a pod to `details` (client sidecar -> mTLS -> server
sidecar -> app) under iptables capture vs HTTP_PROXY, and both against one hand-written static Envoy in front of the
same app. Needs root (network namespaces); otherwise only the HTTP_PROXY mode is measured.

Each round sends REQUESTS requests over one keep-alive connection per path, paths in alternating order; the
median round ratio of mean latencies is reported.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import StaticEnvoy, free_port, median, row
from mesh.compile import build_policies
from mesh.dataplane import netns
from mesh.dataplane.addresses import allocate_block
from mesh.runtime import SIDECAR_OUTBOUND_PORT
from mesh.targets.local import LocalMesh, LocalOptions

ROUNDS = 5
REQUESTS = 1000


class _Conn(http.client.HTTPConnection):
    def __init__(self, make: Callable[[], socket.socket]) -> None:
        super().__init__("bench", 80, timeout=10)
        self._make = make

    def connect(self) -> None:
        self.sock = self._make()


def mean_latency(make: Callable[[], socket.socket], path: str, host: str) -> float:
    """Seconds per request over one keep-alive connection."""
    conn = _Conn(make)
    try:
        for _ in range(50):  # warm the connection pools of every hop
            conn.request("GET", path, headers={"Host": host})
            conn.getresponse().read()
        t0 = time.perf_counter()
        for _ in range(REQUESTS):
            conn.request("GET", path, headers={"Host": host})
            r = conn.getresponse()
            r.read()
            assert r.status == 200, r.status
        return (time.perf_counter() - t0) / REQUESTS
    finally:
        conn.close()


def _mesh(mode: str, state: Path) -> LocalMesh:
    block = allocate_block()
    options = LocalOptions(
        state_dir=state,
        ingress_host=block.gateway_ip,
        ingress_port=free_port(block.gateway_ip),
        ingress_https_port=free_port(block.gateway_ip),
        loopback_block=block.b,
        interception=mode,
    )
    return LocalMesh(build_policies("dev"), options, progress=lambda m: None).start()


def main() -> None:
    config_modes = ["proxy"] + (["iptables"] if netns.available()[0] else [])
    if len(config_modes) == 1:
        print(f"  iptables mode skipped: {netns.available()[1]}")
    meshes: dict[str, LocalMesh] = {}
    tmp = tempfile.TemporaryDirectory(prefix="bench-interception-")
    static = None
    app: subprocess.Popen[bytes] | None = None
    try:
        for mode in config_modes:
            meshes[mode] = _mesh(mode, Path(tmp.name) / mode)
        proxy_mesh = meshes["proxy"]
        client = next(p for p in proxy_mesh.registry.pods if p.service == "productpage")
        listen_ip = f"127.{proxy_mesh.block.b if proxy_mesh.block else 1}.0.9"
        # the same sample app on TCP, outside any mesh, behind one static Envoy
        app_port = free_port(listen_ip)
        app = subprocess.Popen(
            [sys.executable, "-m", "mesh.sampleapp"],
            env={**os.environ, "SERVICE_NAME": "details", "HOST": listen_ip, "PORT": str(app_port)},
            stderr=subprocess.DEVNULL,
        )
        static = StaticEnvoy((listen_ip, free_port(listen_ip)), upstream=(listen_ip, app_port))
        static.wait_ok()
        paths: dict[str, Callable[[], float]] = {
            "static": lambda: mean_latency(lambda: socket.create_connection(static.listen), "/details", "details"),
            "proxy": lambda: mean_latency(
                lambda: socket.create_connection((client.ip, SIDECAR_OUTBOUND_PORT)),
                "http://details:9080/details",
                "details:9080",
            ),
        }
        if "iptables" in meshes:
            captured = meshes["iptables"]
            assert captured.capture is not None
            cpod = next(p for p in captured.registry.pods if p.service == "productpage")
            ns = captured.capture.namespace(cpod.name)
            vip = captured.capture.vips["details.default.svc.cluster.local"]
            paths["iptables"] = lambda: mean_latency(
                lambda: netns.connect_in(ns, vip, 9080, 10), "/details", "details:9080"
            )
        rounds: dict[str, list[float]] = {k: [] for k in paths}
        for i in range(ROUNDS):
            for name in paths if i % 2 == 0 else reversed(list(paths)):
                rounds[name].append(paths[name]())
        base = median(rounds["static"])
        row("HTTP_PROXY mode, pod -> details (2 sidecars, mTLS)", median(rounds["proxy"]) * 1e6, base * 1e6, "us")
        if "iptables" in rounds:
            ipt, prx = median(rounds["iptables"]), median(rounds["proxy"])
            row("iptables mode, pod -> details (2 sidecars, mTLS)", ipt * 1e6, base * 1e6, "us")
            ratios = [a / b for a, b in zip(rounds["iptables"], rounds["proxy"], strict=True)]
            print(f"  hop ratio iptables / HTTP_PROXY (median of {ROUNDS} rounds): {median(ratios):.2f}")
            print(f"  hop ratio iptables / static Envoy: {ipt / base:.2f}; HTTP_PROXY / static Envoy: {prx / base:.2f}")
    finally:
        if static is not None:
            static.stop()
        if app is not None:
            app.kill()
            app.wait()
        for m in meshes.values():
            m.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()

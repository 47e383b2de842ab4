"""Shared helpers: percentiles, a bare static Envoy (the baseline), a quiet local mesh."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from mesh.dataplane.envoy import envoy_binary
from mesh.envoyjson import socket_address, static_cluster


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def static_envoy_config(
    listen: tuple[str, int], admin: tuple[str, int], upstream: tuple[str, int] | None
) -> dict[str, Any]:
    """A minimal hand-written Envoy: one listener, router, one static cluster (or a direct response)."""
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "static",
        "http_filters": [
            {
                "name": "router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    route: dict[str, Any] = {"match": {"prefix": "/"}}
    clusters = []
    if upstream:
        route["route"] = {"cluster": "upstream", "timeout": "0s"}
        clusters.append(static_cluster("upstream", socket_address(*upstream)))
    else:
        route["direct_response"] = {"status": 200, "body": {"inline_string": "ok\n"}}
    hcm["route_config"] = {"name": "local", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]}
    return {
        "admin": {"address": {"socket_address": {"address": admin[0], "port_value": admin[1]}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ],
            "clusters": clusters,
        },
    }


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """Run on one CPU (taskset) so load generator and proxies stop trading cores mid-measurement."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


class StaticEnvoy:
    def __init__(
        self, listen: tuple[str, int], upstream: tuple[str, int] | None = None, cpu: int | None = None
    ) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="bench-envoy-")
        path = Path(self.dir.name) / "envoy.json"
        self.admin = (listen[0], free_port(listen[0]))
        path.write_text(json.dumps(static_envoy_config(listen, self.admin, upstream)))
        self.listen = listen
        self.proc = subprocess.Popen(
            pinned(
                [
                    envoy_binary(),
                    "-c",
                    str(path),
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "error",
                ],
                cpu,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ok(self, timeout: float = 10.0) -> float:
        """Seconds until the listener answers 200."""
        s = requests.Session()
        s.trust_env = False
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            try:
                if s.get(f"http://{self.listen[0]}:{self.listen[1]}/", timeout=0.5).status_code == 200:
                    return time.perf_counter() - t0
            except requests.RequestException:
                time.sleep(0.002)
        raise RuntimeError("static Envoy did not answer")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.dir.cleanup()


def row(name: str, value: float, baseline: float, unit: str, goal: str = "") -> None:
    ratio = value / baseline if baseline else float("nan")
    print(
        f"  {name:<44}{value:>10.2f} {unit:<4} baseline {baseline:>8.2f} {unit:<4} ratio {ratio:>6.2f}  {goal}",
        flush=True,
    )

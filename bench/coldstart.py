"""`mesh up` cold start to the first 200 through the ingress (goal <= 1.5 s on 2 cores).

Baseline: one bare Envoy with a static config, spawn to first 200, in the same run.
"""

from __future__ import annotations

import time

import requests

from bench.common import StaticEnvoy, free_port, median, row
from mesh.compile import build_policies
from mesh.harness.under_test import LocalMeshUnderTest

RUNS = 5


def mesh_cold_start() -> float:
    """The same start as `mesh up` (analysis, xDS, 15 processes, all ACKed), then polls the ingress for a 200."""
    config = build_policies("dev", "policies")
    s = requests.Session()
    s.trust_env = False
    t0 = time.perf_counter()
    mesh = LocalMeshUnderTest(config)
    try:
        while True:
            r = s.get(mesh.mesh.ingress_url + "/productpage", headers={"Host": "bookinfo.local"}, timeout=5)
            if r.status_code == 200:
                return time.perf_counter() - t0
    finally:
        mesh.stop()


def bare_envoy_cold_start() -> float:
    e = StaticEnvoy(("127.0.0.1", free_port()))
    try:
        return e.wait_ok()
    finally:
        e.stop()


def main() -> None:
    mesh_times, bare_times = [], []
    for _ in range(RUNS):
        bare_times.append(bare_envoy_cold_start())
        mesh_times.append(mesh_cold_start())
    print(f"  {RUNS} runs each; mesh = 7 apps + 7 sidecars + gateway, all ACKed, then first 200 via the ingress")
    print(f"  mesh runs (s): {', '.join(f'{t:.2f}' for t in mesh_times)}")
    row("cold start, median", median(mesh_times), median(bare_times), "s", "goal <= 1.5 s")

"""Control-plane growth: full push (translate + push + every proxy ACKed) and control-plane memory against the
number of services (100, 1k, 5k at 10 proxies) and of proxies (10, 100, 1k at 100 services), for unscoped proxies
(each sees every service) and Sidecar-scoped ones (a Sidecar per workload listing the 5 services it calls), then
the goal point, 5,000 services x 1,000 Sidecar-scoped proxies (<= 5 s, <= 1 GB).

Each point runs in a fresh process (so its peak RSS is its own); the proxies are simulated ADS clients in another
process that decode every resource and ACK (`bench.adsclients`). Baseline: serializing one proxy's complete config,
in the same process. The unscoped goal point runs only with BENCH_CURVE_GOAL=1: every one of 1,000 proxies then
receives all 5,000 services (15 MB each), and translation alone passes 1.8 GB before the first push completes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from bench.common import row

SERVICE_POINTS = [(100, 10), (1000, 10), (5000, 10)]
PROXY_POINTS = [(100, 100), (100, 1000)]  # (100, 10) is the first services point
GOAL_POINT = (5000, 1000)
MODES = ("unscoped", "scoped")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def point(services: int, proxies: int, mode: str = "unscoped") -> dict[str, float]:
    """One measurement, in this process: connect the clients, sync, then time a change to every route."""
    from bench.scale import build, simulated_mesh, with_sidecars
    from mesh.api import MeshConfig
    from mesh.controlplane.xds import resources as rt

    def config(weight: int) -> MeshConfig:
        base = build(weight, services=services, proxies=proxies)
        return with_sidecars(base, services, proxies) if mode == "scoped" else base

    with simulated_mesh(config(10), proxies) as mesh:
        pilot, snap = mesh.pilot, mesh.snapshot
        synced = pilot.cache.wait_synced(mesh.nodes, timeout=1800)
        assert all(r.state == "SYNCED" for r in synced.values())
        t0 = time.perf_counter()
        full = pilot.push(config(20), wait=1800)
        full_ms = (time.perf_counter() - t0) * 1000
        assert full.synced
    t0 = time.perf_counter()
    for t in rt.ORDER:
        for m in snap.resources(t).items.values():
            m.SerializeToString()
    serialize_ms = (time.perf_counter() - t0) * 1000
    return {
        "full_ms": full_ms,
        "translate_ms": full.translate_ms,
        "serialize_ms": serialize_ms,
        "rss_mb": peak_rss_mb(),
    }


def run(services: int, proxies: int, mode: str = "unscoped") -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.curve", str(services), str(proxies), mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    points = [(m, s, p) for m in MODES for s, p in [*SERVICE_POINTS, *PROXY_POINTS]]
    points.append(("scoped", *GOAL_POINT))
    if os.environ.get("BENCH_CURVE_GOAL") == "1":
        points.append(("unscoped", *GOAL_POINT))
    print(f"  {'mode':>8} {'services':>8} {'proxies':>8} {'full push ms':>13} {'translate ms':>13} {'peak RSS MB':>12}")
    results = {}
    for mode, services, proxies in points:
        r = results[(mode, services, proxies)] = run(services, proxies, mode)
        print(
            f"  {mode:>8} {services:>8} {proxies:>8} {r['full_ms']:>13.0f} {r['translate_ms']:>13.0f} "
            f"{r['rss_mb']:>12.0f}",
            flush=True,
        )
    goal = results[("scoped", *GOAL_POINT)]
    row(
        f"full push {GOAL_POINT[0]} svc x {GOAL_POINT[1]} scoped proxies",
        goal["full_ms"],
        goal["serialize_ms"],
        "ms",
        f"goal <= 5000 ms (peak RSS {goal['rss_mb']:.0f} MB, goal <= 1024 MB)",
    )


if __name__ == "__main__":
    s, p = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(point(s, p, sys.argv[3] if len(sys.argv) > 3 else "unscoped")), flush=True)

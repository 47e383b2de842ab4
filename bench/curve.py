"""Control-plane growth: full push (translate + push + every proxy ACKed) and control-plane memory against the
number of services (100, 1k, 5k at 10 proxies) and of proxies (10, 100, 1k at 100 services).

Each point runs in a fresh process (so its peak RSS is its own); the proxies are simulated ADS clients in another
process that decode every resource and ACK (`bench.adsclients`). Baseline: serializing one proxy's complete config,
in the same process. The goal point, 5,000 services x 1,000 proxies (<= 5 s, <= 1 GB), runs only with
BENCH_CURVE_GOAL=1: on a shared 2-core machine it takes many minutes today (see the README).
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


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def point(services: int, proxies: int) -> dict[str, float]:
    """One measurement, in this process: connect the clients, sync, then time a change to every route."""
    from bench.scale import build, simulated_mesh
    from mesh.controlplane.xds import resources as rt

    with simulated_mesh(build(10, services=services, proxies=proxies), proxies) as mesh:
        pilot, snap = mesh.pilot, mesh.snapshot
        synced = pilot.cache.wait_synced(mesh.nodes, timeout=1800)
        assert all(r.state == "SYNCED" for r in synced.values())
        t0 = time.perf_counter()
        full = pilot.push(build(20, services=services, proxies=proxies), wait=1800)
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


def run(services: int, proxies: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.curve", str(services), str(proxies)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    points = [*SERVICE_POINTS, *PROXY_POINTS]
    if os.environ.get("BENCH_CURVE_GOAL") == "1":
        points.append(GOAL_POINT)
    print(f"  {'services':>8} {'proxies':>8} {'full push ms':>13} {'translate ms':>13} {'peak RSS MB':>12}")
    results = {}
    for services, proxies in points:
        r = results[(services, proxies)] = run(services, proxies)
        print(
            f"  {services:>8} {proxies:>8} {r['full_ms']:>13.0f} {r['translate_ms']:>13.0f} {r['rss_mb']:>12.0f}",
            flush=True,
        )
    last = results[points[-1]]
    name = f"full push {points[-1][0]} svc x {points[-1][1]} proxies"
    row(name, last["full_ms"], last["serialize_ms"], "ms", "goal (5k x 1k) <= 5000 ms, RSS <= 1 GB")


if __name__ == "__main__":
    s, p = int(sys.argv[1]), int(sys.argv[2])
    print(json.dumps(point(s, p)), flush=True)

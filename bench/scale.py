"""Control plane at scale: 1,000 services x 5 routes, 50 proxies (goals: full push <= 1 s, one-route change <= 50 ms).

Proxies are simulated ADS clients in another process that subscribe and ACK like Envoy (50 real Envoys with
3,000 clusters each do not fit 2 cores). Baseline: serializing one proxy's complete config once.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bench.common import row
from mesh.api import (
    DestinationRule,
    HTTPRoute,
    MeshConfig,
    Service,
    Subset,
    Version,
    VirtualService,
)
from mesh.api import helpers as h
from mesh.api.sidecar import IstioEgressListener, Sidecar, SidecarWorkloadSelector
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.pilot import Pilot, PushResult
from mesh.controlplane.translate import MeshOptions
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.server import XdsServer
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.runtime import Registry, pods_for

SERVICES, PROXIES = 1000, 50


def build(
    weight: int,
    touched: int | None = None,
    touched_weight: int = 50,
    services: int = SERVICES,
    proxies: int = PROXIES,
) -> MeshConfig:
    """Every service: v1/v2 subsets, a VirtualService with 5 rules (canary at `weight`); service `touched` alone
    gets `touched_weight` instead. The `proxies` pods are spread over the services round-robin."""
    cfg = MeshConfig()
    for i in range(services):
        name = f"svc-{i:04d}"
        replicas = proxies // services + (1 if i < proxies % services else 0)
        cfg.add(
            Service(
                name=name,
                versions=[
                    Version(name="v1", replicas=replicas, command=["x"]),
                    Version(name="v2", replicas=0, command=["x"]),
                ],
            )
        )
        cfg.add(
            DestinationRule(
                name=name,
                host=name,
                subsets=[Subset(name="v1", labels={"version": "v1"}), Subset(name="v2", labels={"version": "v2"})],
            )
        )
        w = touched_weight if touched == i else weight
        cfg.add(
            VirtualService(
                name=name,
                hosts=[name],
                http=[
                    HTTPRoute(match=[h.when_header("end-user", exact="jason")], route=[h.to(name, "v2")]),
                    HTTPRoute(match=[h.when_path(prefix="/api/v2")], route=[h.to(name, "v2")], timeout="2s"),
                    HTTPRoute(match=[h.when_path(exact="/health")], route=[h.to(name, "v1")]),
                    HTTPRoute(
                        match=[h.when_path(prefix="/slow")], route=[h.to(name, "v1")], retries=h.retries(3, "1s")
                    ),
                    h.split(name, {"v1": 100 - w, "v2": w}),
                ],
            )
        )
    return cfg


def touch(config: MeshConfig, k: int, weight: int) -> MeshConfig:
    """`config` with service k's VirtualService replaced by one with canary `weight`: one changed object, the rest
    the same objects (a reconciler applying a one-file change; recompiling every object instead costs ~30 ms more
    at 1k services, the content digests of ~3,000 new objects)."""
    one = build(0, touched=k, touched_weight=weight, services=k + 1, proxies=0)
    vs = next(r for r in one.resources if isinstance(r, VirtualService) and r.name == f"svc-{k:04d}")
    return MeshConfig(services=config.services, resources=[vs if r.key == vs.key else r for r in config.resources])


DEPENDENCIES = 5


def dependencies(i: int, services: int) -> list[int]:
    """The services workload i calls: the next five (a realistic handful, and every service has callers)."""
    return [(i + d) % services for d in range(1, DEPENDENCIES + 1)]


def with_sidecars(config: MeshConfig, services: int = SERVICES, workloads: int = PROXIES) -> MeshConfig:
    """A Sidecar per workload (the first `workloads` services have pods) listing the FQDNs of its dependencies, as
    a platform team writes them from observed traffic."""
    sidecars = [
        Sidecar(
            name=f"svc-{i:04d}",
            workload_selector=SidecarWorkloadSelector(labels={"app": f"svc-{i:04d}"}),
            egress=[
                IstioEgressListener(
                    hosts=[f"./svc-{d:04d}.default.svc.cluster.local" for d in dependencies(i, services)]
                )
            ],
        )
        for i in range(min(workloads, services))
    ]
    return MeshConfig(config.services, [*config.resources, *sidecars])


@dataclass
class SimulatedMesh:
    pilot: Pilot
    nodes: list[str]
    snapshot: Snapshot  # the first proxy's, from the first push
    first: PushResult
    port: int = 0  # the xDS server's (for real Envoys serving the nodes past `simulated`)


@contextlib.contextmanager
def simulated_mesh(
    base: MeshConfig, proxies: int, options: MeshOptions | None = None, simulated: int | None = None
) -> Iterator[SimulatedMesh]:
    """A Pilot serving `base` over a real ADS server to `proxies` simulated clients in another process
    (`bench.adsclients`, which decode every resource and ACK); yields once the clients are connected. With
    `simulated`, only the first that many nodes get a client (the caller serves the rest, e.g. by real Envoys)."""
    registry = Registry()
    counter = iter(range(1, 100_000))

    def ips() -> tuple[str, str]:
        k = next(counter)
        return f"127.98.{k // 250}.{k % 250 + 1}", f"127.97.{k // 250}.{k % 250 + 1}"

    for svc in base.services:
        for pod in pods_for(svc, ips):
            registry.add_pod(pod)
    pilot = Pilot(registry, CertificateAuthority(), options=options)
    server = XdsServer(pilot.cache, port=0, max_proxies=proxies + 8).start()
    nodes = [p.id for p in registry.proxies]
    first = pilot.push(base, wait=0)
    snap = pilot.cache.get_snapshot(nodes[0])
    assert snap is not None
    spec = {"nodes": nodes[:simulated], **_subscriptions(pilot, nodes)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"}
    clients = subprocess.Popen(
        [sys.executable, "-m", "bench.adsclients", str(server.port), f.name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert clients.stdout is not None and clients.stdout.readline().strip() == "ready"
        yield SimulatedMesh(pilot, nodes, snap, first, server.port)
    finally:
        if clients.stdin:
            clients.stdin.close()
        clients.wait(timeout=60)
        server.stop(0)
        os.unlink(f.name)


def _subscriptions(pilot: Pilot, nodes: list[str]) -> dict[str, object]:
    """What each client subscribes to by name (EDS, RDS), as its Envoy would: one list per distinct snapshot part
    (proxies of one namespace and Sidecar share theirs), `of` maps each node to its list."""
    lists: list[dict[str, list[str]]] = []
    seen: dict[tuple[int, int], int] = {}
    of: dict[str, int] = {}
    for node in nodes:
        snap = pilot.cache.get_snapshot(node)
        assert snap is not None
        eds, rds = snap.resources(rt.ENDPOINT), snap.resources(rt.ROUTE)
        key = (id(eds), id(rds))
        if key not in seen:
            seen[key] = len(lists)
            lists.append({"eds": sorted(eds.items), "rds": sorted(rds.items)})
        of[node] = seen[key]
    return {"subscriptions": lists, "of": of}


def main() -> None:
    with simulated_mesh(build(10), PROXIES) as mesh:
        pilot, nodes, snap, first = mesh.pilot, mesh.nodes, mesh.snapshot, mesh.first
        t0 = time.perf_counter()
        synced = pilot.cache.wait_synced(nodes, timeout=120)
        initial = time.perf_counter() - t0
        assert all(r.state == "SYNCED" for r in synced.values()), {
            n: r.state for n, r in synced.items() if r.state != "SYNCED"
        }

        changed_all = build(20)
        t0 = time.perf_counter()
        full = pilot.push(changed_all, wait=60)
        full_s = time.perf_counter() - t0
        assert full.synced

        one, one_translate = [], []
        for k in range(5):
            cfg = touch(changed_all, k, 30 + k)
            t0 = time.perf_counter()
            res = pilot.push(cfg, wait=30)
            one.append((time.perf_counter() - t0) * 1000)
            one_translate.append(res.translate_ms)
            assert res.synced

    t0 = time.perf_counter()
    size = 0
    for t in rt.ORDER:
        for m in snap.resources(t).items.values():
            size += len(m.SerializeToString())
    serialize_ms = (time.perf_counter() - t0) * 1000
    route_kb = sum(len(m.SerializeToString()) for m in snap.resources(rt.ROUTE).items.values()) / 1024
    n_clusters = len(snap.resources(rt.CLUSTER).items)
    print(
        f"  {SERVICES} services x 5 routes, {PROXIES} proxies; per proxy {n_clusters} clusters, "
        f"{len(snap.resources(rt.ENDPOINT).items)} EDS, {size / 1e6:.1f} MB of config"
    )
    print(
        f"  first translate of all proxies: {first.translate_ms:.0f} ms; connect + initial sync of {PROXIES} streams: {initial:.2f} s"
    )
    row("full change: translate+push+all ACKed", full_s * 1000, serialize_ms, "ms", "goal <= 1000 ms")
    print(f"    (translate {full.translate_ms:.0f} ms, push+ACK {full.sync_ms:.0f} ms)")
    row(
        "one-route change: translate+push+ACKed, median",
        sorted(one)[len(one) // 2],
        serialize_ms,
        "ms",
        "goal <= 50 ms",
    )
    print(
        f"    (translate median {sorted(one_translate)[len(one_translate) // 2]:.0f} ms; the rest is pushing the one "
        f"changed route table, {len(snap.resources(rt.ROUTE).items)} resource of ~{route_kb:.0f} KB, to {PROXIES} proxies)"
    )

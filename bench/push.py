"""Pushes, as users feel them.

1. Push -> first changed response, p50/p99 over 60 pushes (goal p99 <= 100 ms end to end): flips reviews between
   100% v1 and 100% v3 and polls from productpage's sidecar until the answer changes. Baseline: one request over the
   same path without a push.
2. At scale (issue goal: 1,000 services / 5,000 routes / 50 Envoys, one-route change <= 2x and full change <= 15x
   the baseline, serializing one unscoped proxy's complete config in the same run): translate + push + every
   proxy ACKed, for Sidecar-scoped proxies (each sees 5 services: a Sidecar per workload) on 50 real Envoys, and for
   unscoped proxies (each sees all 1,000) on 48 simulated ADS clients that decode and ACK (`bench.adsclients`) and 2
   real Envoys (50 real Envoys with 3,000 clusters each need ~15 GB and minutes of CPU, more than this 2-core box
   has), once with the sidecar route table whole over RDS and once with its virtual hosts over VHDS.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from bench.common import median, pct, row
from bench.scale import DEPENDENCIES, PROXIES, SERVICES
from mesh.api import MeshConfig, VirtualService, helpers
from mesh.compile import build_policies
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.pilot import Pilot
from mesh.controlplane.translate import MeshOptions
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.server import XdsServer
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.dataplane import envoy
from mesh.dataplane.addresses import allocate_block
from mesh.harness.under_test import LocalMeshUnderTest
from mesh.runtime import Proxy, Registry, pods_for

PUSHES = 60
ONE_ROUTE_PUSHES = 7


def with_reviews(config: MeshConfig, subset: str) -> MeshConfig:
    vs = VirtualService(name="reviews", hosts=["reviews"], http=[helpers.split("reviews", {subset: 100})])
    return MeshConfig(services=config.services, resources=[r for r in config.resources if r.key != vs.key] + [vs])


def main() -> None:
    first_response()
    at_scale()


def first_response() -> None:
    base = build_policies("dev", "policies")
    under_test = LocalMeshUnderTest(base)
    mesh = under_test.mesh
    try:
        client = under_test.from_pod("productpage")
        configs = {s: with_reviews(base, s) for s in ("v1", "v3")}
        mesh.pilot.push(configs["v1"])
        plain = []
        for _ in range(PUSHES):
            t0 = time.perf_counter()
            client.get("http://reviews:9080/reviews")
            plain.append((time.perf_counter() - t0) * 1000)
        changed, acked, stale_after_ack = [], [], []
        current = "v1"
        for _ in range(PUSHES):
            target = "v3" if current == "v1" else "v1"
            t0 = time.perf_counter()
            res = mesh.pilot.push(configs[target], wait=10.0)
            acked.append((time.perf_counter() - t0) * 1000)
            assert res.synced
            n_stale = 0
            while client.get("http://reviews:9080/reviews").json["version"] != target:
                n_stale += 1
            changed.append((time.perf_counter() - t0) * 1000)
            stale_after_ack.append(n_stale)
            current = target
    finally:
        under_test.stop()
    print(f"  {PUSHES} pushes to 8 proxies; times from push() call")
    print(
        f"  responses still old after every proxy ACKed: {sum(stale_after_ack)} in {PUSHES} pushes "
        f"(max {max(stale_after_ack)} in one)"
    )
    row("push -> all proxies ACKed, p50", median(acked), median(plain), "ms")
    row("push -> first changed response, p50", median(changed), median(plain), "ms")
    row("push -> first changed response, p99", pct(changed, 99), median(plain), "ms", "goal p99 <= 100 ms")


# --- at scale ------------------------------------------------------------------------------------------------


def serialize_ms(snap: Snapshot) -> float:
    t0 = time.perf_counter()
    for t in rt.ORDER:
        for m in snap.resources(t).items.values():
            m.SerializeToString()
    return (time.perf_counter() - t0) * 1000


@contextlib.contextmanager
def real_envoys(proxies: Sequence[Proxy], xds_port: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """One real Envoy per proxy (concurrency 1), all reaped on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        try:
            for proxy in proxies:
                boot = envoy.write_bootstrap(
                    Path(tmp) / f"{proxy.name}.json", envoy.bootstrap(proxy, "127.0.0.1", xds_port)
                )
                procs.append(
                    subprocess.Popen(
                        envoy.command(boot, log_level="critical"),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            yield procs
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _push(pilot: Pilot, config: MeshConfig) -> tuple[float, float, int]:
    """(translate+push+ACKed ms, translate ms, proxies pushed)."""
    t0 = time.perf_counter()
    res = pilot.push(config, wait=120)
    total = (time.perf_counter() - t0) * 1000
    assert res.synced, {n: r.state for n, r in res.results.items() if r.state != "SYNCED"}
    return total, res.translate_ms, len(res.changed)


def _full_then_one_route(
    pilot: Pilot, config: MeshConfig
) -> tuple[tuple[float, float, int], list[tuple[float, float, int]], MeshConfig]:
    """A full change to `config`, then ONE_ROUTE_PUSHES one-route changes (service 3's canary weight): their
    `_push` figures and the config last pushed."""
    from bench.scale import touch

    full = _push(pilot, config)
    one = []
    for k in range(ONE_ROUTE_PUSHES):
        config = touch(config, 3, 30 + k)
        one.append(_push(pilot, config))
    return full, one, config


def scoped_on_real_envoys(baseline_ms: float) -> None:
    from bench.scale import build, touch, with_sidecars

    registry = Registry()
    block = allocate_block()
    base = build(10)
    for svc in base.services:
        for pod in pods_for(svc, block.next_pod):
            registry.add_pod(pod)
    pilot = Pilot(registry, CertificateAuthority())
    server = XdsServer(pilot.cache, port=0, max_proxies=PROXIES + 8).start()
    nodes = [p.id for p in registry.proxies]
    try:
        pilot.push(with_sidecars(base), wait=0)
        with real_envoys(registry.proxies, server.port):
            t0 = time.perf_counter()
            synced = pilot.cache.wait_synced(nodes, timeout=120)
            assert all(r.state == "SYNCED" for r in synced.values()), synced
            start_s = time.perf_counter() - t0
            snap = pilot.cache.get_snapshot(nodes[0])
            assert snap is not None
            clusters = len(snap.resources(rt.CLUSTER).items)
            (full_ms, full_translate, full_pushed), one, config = _full_then_one_route(pilot, with_sidecars(build(20)))
            one_translated = pilot.last.translated if pilot.last else -1
            idle = _push(pilot, touch(config, 700, 30))  # a service no proxy here calls
    finally:
        server.stop(0)
    print(
        f"  scoped: {PROXIES} real Envoys (each sees {DEPENDENCIES} services: {clusters} clusters), all ACKed "
        f"{start_s:.1f} s after spawn"
    )
    row("scoped full change: translate+push+ACKed", full_ms, baseline_ms, "ms", "goal ratio <= 15")
    print(f"    (translate {full_translate:.0f} ms, {full_pushed} proxies pushed)")
    row("scoped one-route change, median", median([o[0] for o in one]), baseline_ms, "ms", "goal ratio <= 2")
    print(
        f"    (range {min(o[0] for o in one):.0f}-{max(o[0] for o in one):.0f} ms over {len(one)} pushes; translate "
        f"median {median([o[1] for o in one]):.1f} ms; {one[0][2]} proxies call the changed service and are pushed, "
        f"the others get nothing; a change to a service no proxy calls: {idle[0]:.0f} ms, {idle[2]} pushed)"
    )
    print(
        f"    (dependency-indexed: {one_translated} of {PROXIES} proxies re-translated per one-route change, the "
        "others keep their snapshot object; indexes patched, not rebuilt)"
    )


REAL_UNSCOPED = 2  # real Envoys among the unscoped proxies: they prove Envoy accepts and applies the config


def unscoped(vhds: Literal["on", "off"], baseline_ms: float | None = None) -> float:
    """Unscoped proxies (each sees all 1,000 services): the last REAL_UNSCOPED are real Envoys in the same pushes,
    the rest simulated clients (`bench.adsclients`: decode and ACK; with VHDS they speak delta as Envoy does).
    `vhds` is MeshOptions.vhds ("off": the route table whole over RDS). Returns the baseline, serializing one
    unscoped proxy's complete config (measured here when not given)."""
    from bench.scale import build, simulated_mesh

    label = "unscoped" if vhds == "off" else "unscoped VHDS"
    with simulated_mesh(build(10), PROXIES, MeshOptions(vhds=vhds), simulated=PROXIES - REAL_UNSCOPED) as mesh:
        pilot = mesh.pilot
        real = pilot.registry.proxies[PROXIES - REAL_UNSCOPED :]
        with real_envoys(real, mesh.port):
            t0 = time.perf_counter()
            for proxy in real:
                _wait_ready(envoy.Admin(proxy.ip))  # a listener warms until its route table (and hosts) arrived
            synced = pilot.cache.wait_synced(mesh.nodes, timeout=120)
            assert all(r.state == "SYNCED" for r in synced.values()), synced
            start_s = time.perf_counter() - t0
            (full_ms, full_translate, _), one, _ = _full_then_one_route(pilot, build(20))
            hosts, weight = _served_weight(envoy.Admin(real[0].ip), "svc-0003.")
            acks = _ack_ms(pilot, mesh.nodes, rt.VIRTUAL_HOST if vhds != "off" else rt.ROUTE)
        sent = [pilot.cache.status(n).types.get(rt.VIRTUAL_HOST) for n in mesh.nodes]
        snap = mesh.snapshot
    last = 30 + ONE_ROUTE_PUSHES - 1
    assert weight == last, f"a real Envoy serves weight {weight} for svc-0003, not the {last} last pushed"
    if baseline_ms is None:
        baseline_ms = serialize_ms(snap)
        size = sum(len(m.SerializeToString()) for t in rt.ORDER for m in snap.resources(t).items.values())
        print(
            f"  unscoped: each proxy sees all {SERVICES} services ({len(snap.resources(rt.CLUSTER).items)} clusters,"
            f" {size / 1e6:.1f} MB); baseline = serializing that config"
        )
    how = "route table whole over RDS" if vhds == "off" else "its virtual hosts over VHDS (delta)"
    print(
        f"  {label}: {how}; {PROXIES - REAL_UNSCOPED} simulated clients + {REAL_UNSCOPED} real Envoys (ready and "
        f"ACKed {start_s:.1f} s after spawn; after the pushes a real Envoy's route table holds {hosts} virtual hosts "
        f"and serves the last pushed weight)"
    )
    row(f"{label} full change: translate+push+ACKed", full_ms, baseline_ms, "ms", "goal ratio <= 15")
    print(f"    (translate {full_translate:.0f} ms)")
    row(f"{label} one-route change, median", median([o[0] for o in one]), baseline_ms, "ms", "goal ratio <= 2")
    counts = sorted({st.sent_resources for st in sent if st is not None})
    what = "the changed ~1.1 MB route table" if vhds == "off" else f"{counts} virtual host(s)"
    print(
        f"    (range {min(o[0] for o in one):.0f}-{max(o[0] for o in one):.0f} ms; translate median "
        f"{median([o[1] for o in one]):.0f} ms; the last push sent {what} to each of {PROXIES}; sent -> ACKed: "
        f"simulated median {median(acks[:-REAL_UNSCOPED]):.1f} ms, real Envoys "
        f"{', '.join(f'{a:.1f}' for a in acks[-REAL_UNSCOPED:])} ms)"
    )
    return baseline_ms


def _ack_ms(pilot: Pilot, nodes: list[str], type_url: str) -> list[float]:
    """Per node, from the last response of `type_url` sent to its ACK (what the proxy took to apply it)."""
    out = []
    for n in nodes:
        st = pilot.cache.status(n).types[type_url]
        out.append((st.acked_at - st.sent_at) * 1000)
    return out


def _wait_ready(admin: envoy.Admin, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if admin.ready():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Envoy at {admin} not ready after {timeout:.0f} s")
        time.sleep(0.1)


def _served_weight(admin: envoy.Admin, host_prefix: str) -> tuple[int, int]:
    """(virtual hosts in the sidecar route table, the canary (v2) weight served for the first host named
    `host_prefix...`), read from Envoy's config_dump."""
    dump = admin.config_dump("dynamic_route_configs")
    table = next(c["route_config"] for c in dump["configs"] if c["route_config"]["name"].startswith("http_proxy"))
    vhosts = table.get("virtual_hosts", [])
    vh = next(v for v in vhosts if v["name"].split("/", 1)[-1].startswith(host_prefix))
    for route in vh["routes"]:
        for c in route.get("route", {}).get("weighted_clusters", {}).get("clusters", []):
            if "|v2|" in c["name"]:
                return len(vhosts), int(c.get("weight", 0))
    return len(vhosts), 0


def at_scale() -> None:
    print(f"  {SERVICES} services x 5 routes, {PROXIES} proxies")
    baseline = unscoped("off")
    unscoped("on", baseline)
    scoped_on_real_envoys(baseline)

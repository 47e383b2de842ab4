"""The edge tier: throughput and added latency of HAProxy in front of the gateway, and rotations under load.

Latency and throughput: the same gateway Envoys (answering 200 themselves, so only proxies are measured) reached
directly and through the edge (plain HTTP, and TLS-terminating HTTPS), in alternating rounds of wrk in the same run;
the ratio is edge / gateway alone. wrk -c1 gives the mean latency (1 / requests per second on one connection, far
steadier than a µs-rounded p50), wrk -c16 the throughput. wrk runs pinned to one core; HAProxy and the Envoys share
the other (and the first, with everything else on this 2-core machine).

Rotations under load (requests/failures): the edge's TLS certificate replaced 5 times (master-worker reloads), and
on a real local mesh (STRICT mTLS) workload certificates living 8 s rotated at half-life for 20 s, then a root
rotation in three pushes.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import free_port, median, pinned, row
from mesh.api.edge import Edge, EdgeListener, EdgeTLS
from mesh.compile import build_policies
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.ca.rotation import Rotation
from mesh.dataplane.addresses import allocate_block
from mesh.edge import EdgeTier
from mesh.edge.testing import Load, gateways
from mesh.targets.local import LocalMesh, LocalOptions

ROUNDS = 5
DURATION = "2s"
LOADGEN_CPU = 0


def wrk(url: str, connections: int) -> float:
    """Requests per second."""
    cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{DURATION}", url], LOADGEN_CPU)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    assert rps and not errors, out
    return float(rps.group(1))


def _credential(root: Path, ca: CertificateAuthority) -> None:
    d = root / "edge-cert"
    d.mkdir(parents=True, exist_ok=True)
    cert = ca.issue_server(("localhost",), ip_addresses=("127.0.0.1",))
    (d / "tls.key").write_bytes(cert.key_pem)
    (d / "tls.crt").write_bytes(cert.cert_chain_pem)


def edge_vs_gateway(tmp: Path) -> None:
    ca = CertificateAuthority()
    creds = tmp / "credentials"
    _credential(creds, ca)
    (tmp / "ca.crt").write_bytes(ca.root_pem)
    block = allocate_block()
    with gateways(tmp / "gateways", 2, block.b, echo=False) as gws:
        edge = Edge(
            name="bench",
            listeners=[
                EdgeListener(name="http", port=free_port()),
                EdgeListener(name="https", port=free_port(), tls=EdgeTLS(credential="edge-cert", alpn=["http/1.1"])),
            ],
        )
        with EdgeTier(edge, gws.replicas, tmp / "edge", creds) as tier:
            direct = f"http://{gws.replicas[0].host}:{gws.replicas[0].port}/"
            urls = {"gateway": direct, "edge http": tier.url("http") + "/", "edge https": tier.url("https") + "/"}
            while any(s.status != "UP" for s in tier.runtime.servers("gateways").values()):
                time.sleep(0.05)
            lat: dict[str, list[float]] = {k: [] for k in urls}
            tput: dict[str, list[float]] = {k: [] for k in urls}
            for i in range(ROUNDS):
                order = list(urls) if i % 2 == 0 else list(reversed(urls))
                for name in order:
                    lat[name].append(1e6 / wrk(urls[name], 1))
                    tput[name].append(wrk(urls[name], 16))
            base_lat, base_tput = median(lat["gateway"]), median(tput["gateway"])
            for name in ("edge http", "edge https"):
                row(f"{name}: mean latency, 1 connection", median(lat[name]), base_lat, "us")
                print(f"    added latency {median(lat[name]) - base_lat:+.0f} us", flush=True)
                row(f"{name}: throughput, 16 connections", median(tput[name]), base_tput, "rps")


def edge_certificate_renewal(tmp: Path) -> None:
    ca = CertificateAuthority()
    creds = tmp / "credentials"
    _credential(creds, ca)
    (tmp / "ca.crt").write_bytes(ca.root_pem)
    block = allocate_block()
    with gateways(tmp / "gateways-r", 2, block.b) as gws:
        edge = Edge(
            name="bench", listeners=[EdgeListener(name="https", port=free_port(), tls=EdgeTLS(credential="edge-cert"))]
        )
        with EdgeTier(edge, gws.replicas, tmp / "edge-r", creds) as tier:
            t0 = time.perf_counter()
            with Load(tier.url(), workers=4, verify=str(tmp / "ca.crt")) as load:
                load.wait_for(100)
                for _ in range(5):
                    _credential(creds, ca)
                    tier.refresh_certificates()
                    load.wait_for(100)
            elapsed = time.perf_counter() - t0
    r = load.result
    print(
        f"  edge: 5 certificate renewals under load: {r.total} requests, {r.failed} failed ({elapsed:.1f}s)", flush=True
    )


def mesh_ca_rotation(tmp: Path) -> None:
    block = allocate_block()
    lm = LocalMesh(
        build_policies("e2e"),
        LocalOptions(state_dir=tmp / "mesh", ingress_host=block.gateway_ip, ingress_port=8080, loopback_block=block.b),
        progress=lambda m: None,
    )
    lm.ca.workload_ttl = dt.timedelta(seconds=8)
    lm.start()
    try:
        client = next(p for p in lm.registry.pods if p.service == "productpage")
        rotation = Rotation(lm.ca, lambda: lm.pilot.push(lm.config, wait=5), idle=0.2).start()
        with Load("http://echo:9080/", workers=3, proxy=f"http://{client.ip}:15001") as load:
            end = time.monotonic() + 20
            while time.monotonic() < end:
                load.wait_for(20)
        rotation.stop()
        r = load.result
        print(
            f"  mesh CA: 8s workload certificates for 20s under load: {rotation.pushes} rotation pushes, "
            f"{r.total} requests, {r.failed} failed",
            flush=True,
        )
        lm.ca.workload_ttl = dt.timedelta(hours=24)
        with Load("http://echo:9080/", workers=3, proxy=f"http://{client.ip}:15001") as load:
            load.wait_for(50)
            t0 = time.perf_counter()
            lm.ca.begin_root_rotation()
            lm.pilot.push(lm.config, wait=10)
            lm.ca.switch_signer()
            lm.pilot.push(lm.config, wait=10)
            lm.ca.finish_root_rotation()
            lm.pilot.push(lm.config, wait=10)
            took = time.perf_counter() - t0
            load.wait_for(50)
        r = load.result
        print(
            f"  mesh CA: root rotation (3 pushes, {took * 1000:.0f} ms) under load: {r.total} requests, {r.failed} failed",
            flush=True,
        )
    finally:
        lm.stop()


def main() -> None:
    if not shutil.which("wrk"):
        print("  skipped: wrk is not installed (apt-get install wrk)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as d:
        tmp = Path(d)
        edge_vs_gateway(tmp)
        edge_certificate_renewal(tmp)
        mesh_ca_rotation(tmp)

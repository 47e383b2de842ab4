"""One hop through our generated sidecar config vs a minimal hand-written static Envoy config (goal ratio <= 1.05).

Both Envoys (concurrency 1) forward to the same upstream Envoy answering a direct response. Each round runs wrk -c1
against both, back to back in alternating order, and keeps the ratio of their mean latencies (1 / requests per
second with one connection: ~30,000 requests each, far steadier than a µs-rounded p50); the median round ratio is
reported, with p50s and wrk -c8 throughput alongside.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import StaticEnvoy, free_port, median, pinned, row
from mesh.api import MeshConfig, PeerAuthentication, PeerAuthenticationMTLS, Service, Version
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.pilot import Pilot
from mesh.controlplane.xds.server import XdsServer
from mesh.dataplane import envoy
from mesh.dataplane.envoy import Admin
from mesh.runtime import Registry, pods_for, sidecar_for

ROUNDS = 10
LOADGEN_CPU, PROXY_CPU = 0, 1  # wrk on one core, the Envoys under test on the other
DURATION = "2s"


def wrk(url: str, connections: int, host: str | None = None) -> tuple[float, float]:
    """(p50 latency in us, requests per second)."""
    cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{DURATION}", "--latency", url], LOADGEN_CPU)
    if host:
        cmd[cmd.index("wrk") + 1 : cmd.index("wrk") + 1] = ["-H", f"Host: {host}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m and rps, out
    p50 = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
    return p50, float(rps.group(1))


def main() -> None:
    if not shutil.which("wrk"):
        print("  skipped: wrk is not installed (apt-get install wrk)")
        return
    upstream = StaticEnvoy(("127.96.1.1", 9080), cpu=PROXY_CPU)
    upstream.wait_ok()
    static = StaticEnvoy(("127.96.0.11", free_port("127.96.0.11")), upstream=("127.96.1.1", 9080), cpu=PROXY_CPU)
    static.wait_ok()

    # our control plane configures a client sidecar whose only upstream "pod" is that same Envoy
    target = Service(name="target", versions=[Version(name="v1", command=["x"])])
    client_svc = Service(name="client", versions=[Version(name="v1", command=["x"])])
    registry = Registry()
    (target_pod,) = pods_for(target, lambda: ("127.96.1.1", "127.96.1.2"))
    (client_pod,) = pods_for(client_svc, lambda: ("127.96.2.1", "127.96.2.2"))
    registry.add_pod(target_pod)
    registry.add_pod(client_pod)
    config = MeshConfig(
        services=[target, client_svc],
        resources=[
            PeerAuthentication(name="default", namespace="istio-system", mtls=PeerAuthenticationMTLS(mode="DISABLE"))
        ],
    )
    pilot = Pilot(registry, CertificateAuthority())
    server = XdsServer(pilot.cache, port=0).start()
    pilot.push(config, wait=0)
    tmp = tempfile.TemporaryDirectory()
    boot = envoy.write_bootstrap(
        Path(tmp.name) / "client.json", envoy.bootstrap(sidecar_for(client_pod), "127.0.0.1", server.port)
    )
    proc = subprocess.Popen(
        pinned(envoy.command(boot, log_level="error"), PROXY_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        admin = Admin(client_pod.ip)
        while not admin.ready():
            pass
        assert (
            pilot.cache.wait_synced([sidecar_for(client_pod).id], timeout=10)[sidecar_for(client_pod).id].state
            == "SYNCED"
        )
        ours_lat, base_lat, ours_rps, base_rps, ratios = [], [], [], [], []
        static_url = f"http://{static.listen[0]}:{static.listen[1]}/"
        ours_url = f"http://{client_pod.ip}:15001/"
        for i in range(ROUNDS):
            runs = {}
            for which in ("static", "ours") if i % 2 == 0 else ("ours", "static"):
                runs[which] = wrk(static_url, 1) if which == "static" else wrk(ours_url, 1, host="target:9080")
            base_lat.append(runs["static"][0])
            ours_lat.append(runs["ours"][0])
            ratios.append(runs["static"][1] / runs["ours"][1])  # mean latency ours / static
            if i < 3:
                base_rps.append(wrk(static_url, 8)[1])
                ours_rps.append(wrk(ours_url, 8, host="target:9080")[1])
    finally:
        proc.terminate()
        proc.wait()
        server.stop(0)
        static.stop()
        upstream.stop()
        tmp.cleanup()
    print(f"  {ROUNDS} interleaved rounds of wrk {DURATION}; upstream = Envoy direct response; plaintext hop")
    print(f"  mean-latency ratio per round (ours / static): {', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"  {'mean latency, wrk -c1: median round ratio':<44}{median(ratios):>10.3f}        goal ratio <= 1.05")
    row("p50 latency, wrk -c1 (ours vs static)", median(ours_lat), median(base_lat), "us")
    row("throughput, wrk -c8 (ours vs static)", median(ours_rps), median(base_rps), "rps", "higher is better")

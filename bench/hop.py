"""One hop through our generated sidecar config vs a minimal hand-written static Envoy config (goal ratio <= 1.05).

Both Envoys (concurrency 1) forward to the same upstream Envoy answering a direct response; wrk -c1 measures
latency, wrk -c8 throughput, interleaved A/B/A/B so machine noise hits both alike.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import StaticEnvoy, free_port, median, row
from mesh.api import MeshConfig, PeerAuthentication, PeerAuthenticationMTLS, Service, Version
from mesh.controlplane.ca import CertificateAuthority
from mesh.controlplane.model import Pod, Registry, sidecar_for
from mesh.controlplane.pilot import Pilot
from mesh.controlplane.xds.server import XdsServer
from mesh.dataplane import envoy
from mesh.dataplane.envoy import Admin

ROUNDS = 3
DURATION = "4s"


def wrk(url: str, connections: int, host: str | None = None) -> tuple[float, float]:
    """(p50 latency in us, requests per second)."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{DURATION}", "--latency", url]
    if host:
        cmd[1:1] = ["-H", f"Host: {host}"]
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
    upstream = StaticEnvoy(("127.96.1.1", 9080))
    upstream.wait_ok()
    static = StaticEnvoy(("127.96.0.11", free_port("127.96.0.11")), upstream=("127.96.1.1", 9080))
    static.wait_ok()

    # our control plane configures a client sidecar whose only upstream "pod" is that same Envoy
    target = Service(name="target", versions=[Version(name="v1", command=["x"])])
    client_svc = Service(name="client", versions=[Version(name="v1", command=["x"])])
    registry = Registry()
    target_pod = Pod(
        "target-v1-0",
        "default",
        "target",
        "v1",
        target.pod_labels(target.versions[0]),
        "127.96.1.1",
        "127.96.1.2",
        "target",
        tuple(target.ports),
    )
    client_pod = Pod(
        "client-v1-0",
        "default",
        "client",
        "v1",
        client_svc.pod_labels(client_svc.versions[0]),
        "127.96.2.1",
        "127.96.2.2",
        "client",
        tuple(client_svc.ports),
    )
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
        envoy.command(boot, log_level="error"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        admin = Admin(client_pod.ip)
        while not admin.ready():
            pass
        assert (
            pilot.cache.wait_synced([sidecar_for(client_pod).id], timeout=10)[sidecar_for(client_pod).id].state
            == "SYNCED"
        )
        ours_lat, base_lat, ours_rps, base_rps = [], [], [], []
        for _ in range(ROUNDS):
            lat, _rps = wrk(f"http://{static.listen[0]}:{static.listen[1]}/", 1)
            base_lat.append(lat)
            lat, _rps = wrk(f"http://{client_pod.ip}:15001/", 1, host="target:9080")
            ours_lat.append(lat)
            _lat, rps = wrk(f"http://{static.listen[0]}:{static.listen[1]}/", 8)
            base_rps.append(rps)
            _lat, rps = wrk(f"http://{client_pod.ip}:15001/", 8, host="target:9080")
            ours_rps.append(rps)
    finally:
        proc.terminate()
        proc.wait()
        server.stop(0)
        static.stop()
        upstream.stop()
        tmp.cleanup()
    print(f"  {ROUNDS} interleaved rounds of wrk {DURATION}; upstream = Envoy direct response; plaintext hop")
    row("p50 latency, wrk -c1 (ours vs static)", median(ours_lat), median(base_lat), "us", "goal ratio <= 1.05")
    row("throughput, wrk -c8 (ours vs static)", median(ours_rps), median(base_rps), "rps", "higher is better")

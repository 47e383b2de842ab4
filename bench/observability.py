"""Telemetry cost on one hop: metrics (ALS to the collector) + tracing at 100% and at 1% vs telemetry off
(goal ratios <= 1.10 and <= 1.03), and what a Prometheus scrape costs per proxy.

Three client Envoys (concurrency 1, same core) forward to one upstream Envoy answering a direct response; they
differ only in the telemetry config translation gives every proxy. The collector runs as its own process, as in
`mesh up --observability`. Each round runs wrk -c1 against all three in rotating order; per round we keep the
ratio of mean latencies (from requests/second with one connection), and report the median round ratio.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import StaticEnvoy, free_port, median, pinned, row, static_envoy_config
from bench.hop import LOADGEN_CPU, PROXY_CPU, wrk
from mesh.dataplane import envoy
from mesh.observability.envoyconfig import TelemetryOptions, instrument_static
from mesh.observability.workloads import Workload, write_directory

ROUNDS = 8
IP = "127.97.{}.1"


def _client(
    tmp: Path, name: str, ip: str, upstream: tuple[str, int], options: TelemetryOptions | None
) -> subprocess.Popen[bytes]:
    cfg = static_envoy_config((ip, 15001), (ip, 15000), upstream)
    if options is not None:
        cfg = instrument_static(cfg, options, "source", f"{name}.bench", f"sidecar~{ip}~{name}-0.bench~bench.svc")
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return subprocess.Popen(
        pinned(envoy.command(path, log_level="error"), PROXY_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _scrape_ms(session: requests.Session, url: str, n: int = 40) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        size = len(session.get(url, timeout=5).content)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), size


def main() -> None:
    if not shutil.which("wrk"):
        print("  skipped: wrk is not installed (apt-get install wrk)")
        return
    tmp_dir = tempfile.TemporaryDirectory(prefix="bench-obs-")
    tmp = Path(tmp_dir.name)
    upstream = StaticEnvoy((IP.format(1), 9080), cpu=PROXY_CPU)
    upstream.wait_ok()
    coll_ip = IP.format(9)
    grpc_port, http_port = free_port(coll_ip), free_port(coll_ip)
    write_directory(tmp / "workloads.json", [
        Workload(ip=IP.format(1), name="target-v1", pod="target-v1-0", namespace="bench", app="target", version="v1",
                 service_account="target", service="target.bench.svc.cluster.local"),
    ])  # fmt: skip
    collector = subprocess.Popen(
        [sys.executable, "-m", "mesh.observability.collector", "--grpc", f"{coll_ip}:{grpc_port}",
         "--http", f"{coll_ip}:{http_port}", "--db", str(tmp / "traces.db"), "--workloads", str(tmp / "workloads.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = TelemetryOptions(collector_host=coll_ip, collector_port=grpc_port)
    variants = {
        "off": None,
        "metrics+tracing 100%": base,
        "metrics+tracing 1%": base.model_copy(update={"sampling": 1.0}),
        "metrics only": base.model_copy(update={"tracing": False}),
    }
    ips = {name: IP.format(i + 2) for i, name in enumerate(variants)}
    procs = [_client(tmp, f"c{i}", ips[name], (IP.format(1), 9080), o) for i, (name, o) in enumerate(variants.items())]
    s = requests.Session()
    s.trust_env = False
    try:
        for ip in ips.values():
            deadline = time.monotonic() + 10
            while not envoy.Admin(ip).ready():
                assert time.monotonic() < deadline, f"client Envoy on {ip} did not start"
                time.sleep(0.02)
        rps: dict[str, list[float]] = {n: [] for n in variants}
        lat: dict[str, list[float]] = {n: [] for n in variants}
        names = list(variants)
        for i in range(ROUNDS):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                p50, r = wrk(f"http://{ips[name]}:15001/", 1)
                lat[name].append(p50)
                rps[name].append(r)
        envoy_ms, envoy_bytes = _scrape_ms(s, f"http://{ips['metrics+tracing 100%']}:15000/stats/prometheus")
        coll_ms, coll_bytes = _scrape_ms(s, f"http://{coll_ip}:{http_port}/metrics")
        entries = [ln for ln in s.get(f"http://{coll_ip}:{http_port}/metrics", timeout=5).text.splitlines()
                   if ln.startswith("meshops_telemetry")]  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        collector.terminate()
        collector.wait()
        upstream.stop()
        tmp_dir.cleanup()
    print(f"  {ROUNDS} rotating rounds of wrk -c1 {'2s'}; upstream = Envoy direct response; plaintext hop; "
          f"collector in its own process; wrk on CPU {LOADGEN_CPU}, Envoys on CPU {PROXY_CPU}")  # fmt: skip
    goals = (
        ("metrics+tracing 100%", "goal ratio <= 1.10"),
        ("metrics+tracing 1%", "goal ratio <= 1.03"),
        ("metrics only", "(where the 1% cost goes)"),
    )
    for name, goal in goals:
        ratios = [off / on for off, on in zip(rps["off"], rps[name], strict=True)]
        print(f"  mean-latency ratio per round ({name} / off): {', '.join(f'{r:.3f}' for r in ratios)}")
        print(f"  {'mean latency, ' + name + ': median ratio':<44}{median(ratios):>10.3f}        {goal}")
        row(f"p50 latency, {name} vs off", median(lat[name]), median(lat["off"]), "us")
    print(f"  {'scrape one Envoy /stats/prometheus':<44}{envoy_ms:>10.2f} ms   ({envoy_bytes / 1024:.0f} KiB)")
    print(f"  {'scrape the collector /metrics':<44}{coll_ms:>10.2f} ms   ({coll_bytes / 1024:.0f} KiB, all proxies)")
    print(f"  collector: {'; '.join(entries)}")

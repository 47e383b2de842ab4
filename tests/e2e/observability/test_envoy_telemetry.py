"""One real Envoy hop with the telemetry config translation gives every proxy: exact counts reach the collector
over ALS, one span per request reaches it over OTLP, and an incoming W3C traceparent is continued, not replaced."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.common import static_envoy_config
from mesh.dataplane import envoy
from mesh.dataplane.addresses import allocate_block
from mesh.observability.collector import Collector
from mesh.observability.envoyconfig import TelemetryOptions, instrument_static
from mesh.observability.workloads import Workload, write_directory

pytestmark = pytest.mark.e2e


def _wait(pred: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def hop(tmp_path: Path) -> Iterator[tuple[str, Collector]]:
    block = allocate_block()
    client_ip, target_ip = f"127.{block.b}.1.1", f"127.{block.b}.2.1"
    client = Workload(ip=client_ip, name="client-v1", pod="client-v1-0", namespace="default", app="client",
                      version="v1", service_account="client", service="client.default.svc.cluster.local")  # fmt: skip
    target = Workload(ip=target_ip, name="target-v2", pod="target-v2-0", namespace="default", app="target",
                      version="v2", service_account="target", service="target.default.svc.cluster.local")  # fmt: skip
    write_directory(tmp_path / "workloads.json", [client, target])
    collector = Collector(f"{client_ip}:0", f"{client_ip}:0", tmp_path / "traces.db", tmp_path / "workloads.json")
    collector.start()
    options = TelemetryOptions(collector_host=client_ip, collector_port=collector.grpc_port, flush_interval_ms=100)
    upstream_cfg = static_envoy_config((target_ip, 9080), (target_ip, 15000), None)
    client_cfg = static_envoy_config((client_ip, 15001), (client_ip, 15000), (target_ip, 9080))
    # the cluster name the collector reads destination_service from, as translation names it
    client_cfg["static_resources"]["clusters"][0]["name"] = "outbound|9080|v2|target.default.svc.cluster.local"
    route = client_cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = (
        "outbound|9080|v2|target.default.svc.cluster.local"
    )
    node = f"sidecar~{client_ip}~client-v1-0.default~default.svc.cluster.local"
    client_cfg = instrument_static(client_cfg, options, "source", "client.default", node)
    procs = []
    try:
        for name, cfg in (("upstream", upstream_cfg), ("client", client_cfg)):
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(cfg))
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(envoy.command(path, log_level="warning"), stdout=log, stderr=log))
        for ip in (target_ip, client_ip):
            _wait(lambda ip=ip: envoy.Admin(ip).ready(), f"Envoy on {ip}")
        yield f"http://{client_ip}:15001/", collector
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        collector.stop()


def test_every_request_is_counted_once_with_istio_labels_and_traced(hop: tuple[str, Collector]) -> None:
    url, collector = hop
    s = requests.Session()
    s.trust_env = False
    n = 60
    codes = [s.get(url, timeout=5).status_code for _ in range(n)]
    assert codes == [200] * n
    m = collector.metrics
    _wait(lambda: m.counter("istio_requests_total") >= n, f"{n} access-log entries")
    _wait(lambda: collector.store.received >= n, f"{n} spans")
    assert m.counter("istio_requests_total") == n  # exact: nothing counted twice
    assert (
        m.counter(
            "istio_requests_total",
            reporter="source",
            source_workload="client-v1",
            destination_workload="target-v2",
            destination_version="v2",
            destination_service="target.default.svc.cluster.local",
            response_code="200",
            response_flags="-",
        )
        == n
    )
    recent = collector.store.recent(service="client.default", limit=1000)
    assert len(recent) == n and all(t.spans == 1 for t in recent)

    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert s.get(url, headers={"traceparent": f"00-{trace_id}-{parent}-01"}, timeout=5).status_code == 200
    _wait(lambda: bool(collector.store.spans(trace_id)), "the continued trace")
    [span] = collector.store.spans(trace_id)
    assert span.parent_span_id == parent and span.service == "client.default"

"""The collector end to end without Envoy: ALS streams and OTLP exports over real gRPC, scraped by a real Prometheus."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from envoy.config.core.v3 import base_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from mesh.observability import prometheus as prom
from mesh.observability.collector import Collector
from mesh.observability.traces import render_tree, scopes
from mesh.observability.workloads import write_directory
from tests.unit.observability.conftest import PRODUCTPAGE, REVIEWS_V1, REVIEWS_V3, http_entry


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    workloads = tmp_path / "workloads.json"
    write_directory(workloads, [PRODUCTPAGE, REVIEWS_V1, REVIEWS_V3])
    c = Collector("127.0.0.1:0", "127.0.0.1:0", tmp_path / "traces.db", workloads).start()
    try:
        yield c
    finally:
        c.stop()


def stream_logs(port: int, node_ip: str, log_name: str, entries: list[object]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = als_pb2_grpc.AccessLogServiceStub(ch)
        first = als_pb2.StreamAccessLogsMessage()
        first.identifier.node.CopyFrom(base_pb2.Node(id=f"sidecar~{node_ip}~x.default~default.svc.cluster.local"))
        first.identifier.log_name = log_name
        msgs = [first]
        for i in range(0, len(entries), 7):  # several batches, as Envoy flushes them
            m = als_pb2.StreamAccessLogsMessage()
            m.http_logs.log_entry.extend(entries[i : i + 7])
            msgs.append(m)
        stub.StreamAccessLogs(iter(msgs), timeout=5)


def test_als_stream_becomes_metrics_on_the_http_endpoint(collector: Collector) -> None:
    v1 = [http_entry(upstream=REVIEWS_V1.ip, cluster="outbound|9080|v1|reviews.default.svc.cluster.local")] * 13
    v3 = [http_entry(upstream=REVIEWS_V3.ip, cluster="outbound|9080|v3|reviews.default.svc.cluster.local")] * 8
    stream_logs(collector.grpc_port, PRODUCTPAGE.ip, "istio-source", [*v1, *v3])
    stream_logs(collector.grpc_port, PRODUCTPAGE.ip, "someone-elses-logger", v1)  # not counted
    m = collector.metrics
    assert m.counter("istio_requests_total", destination_version="v1", source_workload="productpage-v1") == 13
    assert m.counter("istio_requests_total", destination_version="v3") == 8
    text = requests.get(f"http://127.0.0.1:{collector.http_port}/metrics", timeout=2).text
    assert "meshops_telemetry_entries_total 21" in text


def _span(trace: bytes, span: bytes, parent: bytes, name: str, start: int, ms: int, **attrs: str) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace,
        span_id=span,
        parent_span_id=parent,
        name=name,
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + ms * 1_000_000,
        attributes=[common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in attrs.items()],
    )


def export(port: int, service: str, *spans: trace_pb2.Span) -> None:
    req = ts.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=common_pb2.AnyValue(string_value=service))
    scopes(rs).add().spans.extend(spans)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        ts_grpc.TraceServiceStub(ch).Export(req, timeout=5)  # type: ignore[no-untyped-call]  # generated, unannotated


def test_otlp_spans_from_several_proxies_form_one_tree_with_timings(collector: Collector) -> None:
    tid, t0 = bytes(range(16)), 1_700_000_000_000_000_000
    a, b, c = b"\x01" * 8, b"\x02" * 8, b"\x03" * 8
    export(collector.grpc_port, "istio-ingressgateway.istio-system", _span(tid, a, b"", "productpage", t0, 2040))
    export(
        collector.grpc_port,
        "productpage.default",
        _span(tid, b, a, "reviews", t0 + 10**6, 2030, response_flags="DI"),
        _span(tid, c, b, "ratings", t0 + 2031 * 10**6, 3, **{"http.status_code": "200"}),
    )
    [root] = collector.store.tree(tid.hex())
    assert root.service == "istio-ingressgateway.istio-system"
    [child] = root.children
    assert (child.name, child.duration_ms, child.attributes["response_flags"]) == ("reviews", 2030, "DI")
    assert [g.name for g in child.children] == ["ratings"]
    text = render_tree([root])
    assert "response_flags=DI" in text and "2030.0 ms" in text
    [summary] = collector.store.recent(service="productpage")
    assert (summary.spans, summary.duration_ms, summary.trace_id) == (3, 2040, tid.hex())


def test_a_real_prometheus_scrapes_exact_counts(collector: Collector, tmp_path: Path) -> None:
    try:
        binary = prom.prometheus_binary()
    except Exception as e:
        pytest.fail(f"{e} (.ci/run must install the Debian package `prometheus`)")
    layout = prom.PrometheusLayout(tmp_path / "prom", prom.loopback_listen())
    prom.prepare(layout, f"127.0.0.1:{collector.http_port}", [PRODUCTPAGE], interval=0.5)
    log = open(tmp_path / "prom.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(prom.command(layout, binary), stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        client = prom.PrometheusClient(layout.url)
        deadline = time.monotonic() + 30
        while not client.ready():
            assert proc.poll() is None, (tmp_path / "prom.log").read_text()
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.1)
        v1 = [http_entry(upstream=REVIEWS_V1.ip, cluster="outbound|9080|v1|reviews.default.svc.cluster.local")] * 29
        v3 = [http_entry(upstream=REVIEWS_V3.ip, cluster="outbound|9080|v3|reviews.default.svc.cluster.local")] * 31
        stream_logs(collector.grpc_port, PRODUCTPAGE.ip, "istio-source", [*v1, *v3])
        client.wait_for_scrape(prom.MESH_JOB, after=time.time())
        got = client.by(
            'sum by (destination_version) (istio_requests_total{destination_service=~"reviews.*", reporter="source"})',
            "destination_version",
        )
        assert got == {"v1": 29, "v3": 31}
        p99 = client.query(
            'histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{reporter="source"}[1m])))'
        )
        assert len(p99) <= 1  # a rate needs two scrapes; the query itself must parse and run on these series
        # file_sd: the proxy's admin target is known to Prometheus (down here: no Envoy in a unit test)
        deadline = time.monotonic() + 10
        while not any(t["labels"].get("job") == prom.ENVOY_JOB for t in client.targets()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

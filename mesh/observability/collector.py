"""The telemetry collector: Envoy's access-log service (ALS) and OTLP traces in over one gRPC port, Istio's
metrics out on `/metrics` for Prometheus. One process per mesh, run by the supervisor
(`python -m mesh.observability.collector`), so telemetry load never competes with xDS pushes for the GIL.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc

from mesh.observability.envoyconfig import Reporter
from mesh.observability.metrics import MeshMetrics
from mesh.observability.traces import TraceStore
from mesh.observability.workloads import Workload, WorkloadDirectory

# log_name of the gRPC access loggers: which end of the request the reporting listener is (see envoyconfig)
LOG_NAMES: dict[str, Reporter] = {"istio-source": "source", "istio-destination": "destination"}


def node_ip(node_id: str) -> str:
    """Istio's node id `sidecar~IP~pod.ns~ns.svc.cluster.local` carries the proxy's IP."""
    parts = node_id.split("~")
    return parts[1] if len(parts) == 4 else ""


class AccessLogReceiver(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """One stream per proxy and logger; the first message names the node and the logger (Envoy sends them once)."""

    def __init__(self, metrics: MeshMetrics) -> None:
        self.metrics = metrics

    def StreamAccessLogs(self, request_iterator: Iterator[als_pb2.StreamAccessLogsMessage], context: Any) -> Any:
        reporter: Reporter | None = None
        me: Workload | None = None
        ip = ""
        for msg in request_iterator:
            if msg.HasField("identifier"):
                reporter = LOG_NAMES.get(msg.identifier.log_name)
                ip = node_ip(msg.identifier.node.id)
            if reporter is None:
                continue  # a logger we do not know: not ours to count
            self.metrics.directory.refresh()
            me = self.metrics.directory.get(ip)
            for h in msg.http_logs.log_entry:
                self.metrics.record_http(h, reporter, me)
            for t in msg.tcp_logs.log_entry:
                self.metrics.record_tcp(t, reporter, me)
        return als_pb2.StreamAccessLogsResponse()


class TraceReceiver(ts_grpc.TraceServiceServicer):
    def __init__(self, store: TraceStore) -> None:
        self.store = store

    def Export(self, request: ts.ExportTraceServiceRequest, context: Any) -> ts.ExportTraceServiceResponse:
        self.store.add(request)
        return ts.ExportTraceServiceResponse()


class _MetricsHandler(BaseHTTPRequestHandler):
    metrics: MeshMetrics
    store: TraceStore

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/metrics"):
            body = self.metrics.exposition().encode()
            body += (
                "# TYPE meshops_telemetry_entries_total counter\n"
                f"meshops_telemetry_entries_total {self.metrics.entries}\n"
                "# TYPE meshops_telemetry_spans_total counter\n"
                f"meshops_telemetry_spans_total {self.store.received}\n"
            ).encode()
            ctype = "text/plain; version=0.0.4; charset=utf-8"
        elif self.path == "/ready":
            body, ctype = b"LIVE\n", "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Collector:
    """ALS + OTLP on `grpc_address`, `/metrics` on `http_address` (both `host:port`, port 0 = any)."""

    def __init__(
        self, grpc_address: str, http_address: str, db: Path, workloads: Path | None = None, max_streams: int = 256
    ) -> None:
        self.metrics = MeshMetrics(WorkloadDirectory(workloads))
        self.store = TraceStore(db)
        # the sync server holds a thread per ALS stream: two loggers per proxy
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=max_streams))
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogReceiver(self.metrics), self._grpc)
        ts_grpc.add_TraceServiceServicer_to_server(TraceReceiver(self.store), self._grpc)  # type: ignore[no-untyped-call]
        self.grpc_port = self._grpc.add_insecure_port(grpc_address)
        host, _, port = http_address.rpartition(":")
        handler = type("Handler", (_MetricsHandler,), {"metrics": self.metrics, "store": self.store})
        self._http = ThreadingHTTPServer((host, int(port)), handler)
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> Collector:
        self._grpc.start()
        self._thread = threading.Thread(target=self._http.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._grpc.stop(grace=0.5).wait()
        self._http.shutdown()
        self._http.server_close()
        self.store.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mesh.observability.collector")
    p.add_argument("--grpc", required=True, help="ALS + OTLP address, host:port")
    p.add_argument("--http", required=True, help="/metrics address, host:port")
    p.add_argument("--db", required=True, type=Path, help="the SQLite trace store")
    p.add_argument("--workloads", type=Path, help="the workload directory (JSON) the mesh keeps current")
    args = p.parse_args(argv)
    collector = Collector(args.grpc, args.http, args.db, args.workloads).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"collector: grpc {args.grpc}, metrics http://{args.http}/metrics, traces {args.db}", flush=True)
    done.wait()
    collector.stop()


if __name__ == "__main__":
    main()

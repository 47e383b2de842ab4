"""The telemetry processes of one local mesh (collector, Prometheus) as supervisor specs, and the files they read
(workload directory, file_sd targets) kept current as pods come and go. The local target calls four methods:
`prepare` before anything starts, `specs` to start them first, `telemetry` for bootstrap and translation, `update`
when pods change."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import requests

from mesh.dataplane.supervisor import ProcessSpec
from mesh.observability import prometheus as prom
from mesh.observability.envoyconfig import TelemetryOptions
from mesh.observability.layout import Endpoints, TelemetryLayout
from mesh.observability.options import ObservabilityOptions as ObservabilityOptions  # its home before
from mesh.observability.workloads import Workload, workload_name, write_directory
from mesh.runtime import SIDECAR_ADMIN_PORT, Proxy

COLLECTOR_GRPC_PORT = 4317  # OTLP's port; ALS shares it
COLLECTOR_HTTP_PORT = 15020  # Istio's merged-metrics port
PROMETHEUS_PORT = 9090


def workload_of(proxy: Proxy, admin_port: int = SIDECAR_ADMIN_PORT) -> Workload:
    app = proxy.labels.get("app", proxy.name)
    service = proxy.pod.fqdn if proxy.pod is not None else f"{app}.{proxy.namespace}.svc.cluster.local"
    return Workload(
        ip=proxy.ip,
        name=workload_name(proxy.name),
        pod=proxy.name,
        namespace=proxy.namespace,
        app=app,
        version=proxy.labels.get("version", ""),
        service_account=proxy.service_account,
        service=service,
        admin_port=admin_port,
    )


class TelemetryStack:
    """Everything listens on `ip`, one loopback address of the mesh's own block: nothing meets another mesh."""

    def __init__(self, layout: TelemetryLayout, ip: str, options: ObservabilityOptions | None = None) -> None:
        self.layout = layout
        self.ip = ip
        self.options = options or ObservabilityOptions()
        self.prometheus = prom.PrometheusLayout(layout.prometheus, f"{ip}:{PROMETHEUS_PORT}")
        self.collector_http = f"{ip}:{COLLECTOR_HTTP_PORT}"
        self._binary = ""

    def telemetry(self) -> TelemetryOptions:
        return TelemetryOptions(
            collector_host=self.ip, collector_port=COLLECTOR_GRPC_PORT, sampling=self.options.sampling
        )

    def prepare(self, proxies: Iterable[Proxy]) -> None:
        """Fails before anything starts when Prometheus is missing (with how to install it)."""
        if self.options.prometheus:
            self._binary = prom.prometheus_binary()
        self.layout.root.mkdir(parents=True, exist_ok=True)
        workloads = [workload_of(p) for p in proxies]
        write_directory(self.layout.workloads, workloads)
        if self.options.prometheus:
            prom.prepare(self.prometheus, self.collector_http, workloads, self.options.scrape_interval)
        self.layout.write_endpoints(
            Endpoints(
                collector_grpc=f"{self.ip}:{COLLECTOR_GRPC_PORT}",
                collector_http=self.collector_http,
                prometheus=self.prometheus.url if self.options.prometheus else "",
            )
        )

    def update(self, proxies: Iterable[Proxy]) -> None:
        workloads = [workload_of(p) for p in proxies]
        write_directory(self.layout.workloads, workloads)
        if self.options.prometheus:
            prom.write_targets(self.prometheus, self.collector_http, workloads)

    def specs(self, logs: Path) -> list[ProcessSpec]:
        collector = ProcessSpec(
            name="telemetry-collector",
            argv=[
                sys.executable,
                "-m",
                "mesh.observability.collector",
                "--grpc",
                f"{self.ip}:{COLLECTOR_GRPC_PORT}",
                "--http",
                self.collector_http,
                "--db",
                str(self.layout.traces),
                "--workloads",
                str(self.layout.workloads),
            ],
            log_path=logs / "telemetry-collector.log",
            ready=lambda: _http_ok(f"http://{self.collector_http}/ready"),
        )
        out = [collector]
        if self.options.prometheus:
            client = prom.PrometheusClient(self.prometheus.url)
            out.append(
                ProcessSpec(
                    name="prometheus",
                    argv=prom.command(self.prometheus, self._binary or None),
                    log_path=logs / "prometheus.log",
                    ready=client.ready,
                )
            )
        return out


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=0.5, proxies={"http": "", "https": ""}).status_code == 200
    except requests.RequestException:
        return False

"""A real Prometheus (Debian's `prometheus`) for the mesh: generated scrape config, file_sd targets rewritten as
pods come and go, data under the state dir, and a small query client that can wait on a real scrape.

Two jobs: `istio-mesh` scrapes the collector (Istio's `istio_*` series), `envoy-stats` scrapes every proxy's
`/stats/prometheus` (Envoy's own `envoy_*` series, as Istio's merged 15090 endpoint would add).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from mesh.errors import TargetError
from mesh.observability.workloads import Workload

MESH_JOB = "istio-mesh"
ENVOY_JOB = "envoy-stats"
INSTALL_HINT = (
    "install Prometheus: `sudo apt-get install prometheus` (Debian/Ubuntu; the package's service need not run), "
    "or set MESH_PROMETHEUS to a prometheus binary"
)


def prometheus_binary() -> str:
    path = os.environ.get("MESH_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
    if not os.access(path, os.X_OK):
        raise TargetError("prometheus is not installed (needed by --observability)", hint=INSTALL_HINT)
    return path


@dataclass(frozen=True)
class PrometheusLayout:
    """Where one mesh's Prometheus keeps its config, targets and data."""

    root: Path
    listen: str  # host:port of the web UI and API

    @property
    def config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def mesh_targets(self) -> Path:
        return self.root / "targets-mesh.json"

    @property
    def envoy_targets(self) -> Path:
        return self.root / "targets-envoy.json"

    @property
    def url(self) -> str:
        return f"http://{self.listen}"


def scrape_config(layout: PrometheusLayout, interval: float = 5.0) -> dict[str, Any]:
    every = f"{max(int(interval * 1000), 100)}ms"
    refresh = "1s"  # file_sd is watched with inotify too; this is only the fallback
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every},
        "scrape_configs": [
            {
                "job_name": MESH_JOB,
                "honor_labels": True,  # the collector's labels are the workloads', as Istio's are the pod's
                "file_sd_configs": [{"files": [str(layout.mesh_targets.resolve())], "refresh_interval": refresh}],
            },
            {
                "job_name": ENVOY_JOB,
                "metrics_path": "/stats/prometheus",
                "file_sd_configs": [{"files": [str(layout.envoy_targets.resolve())], "refresh_interval": refresh}],
            },
        ],
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)  # Prometheus must never read half a target file


def write_targets(layout: PrometheusLayout, collector: str, proxies: Iterable[Workload]) -> None:
    """Rewritten whenever pods come and go; Prometheus picks the change up without a restart."""
    _write_json(layout.mesh_targets, [{"targets": [collector], "labels": {}}])
    groups = [
        {
            "targets": [f"{w.ip}:{w.admin_port}"],
            "labels": {"namespace": w.namespace, "pod": w.pod, "app": w.app, "version": w.version},
        }
        for w in sorted(proxies, key=lambda w: (w.namespace, w.pod))
    ]
    _write_json(layout.envoy_targets, groups)


def prepare(layout: PrometheusLayout, collector: str, proxies: Iterable[Workload], interval: float = 5.0) -> None:
    """A fresh TSDB per mesh: the collector's counters start at zero with the mesh, and series of a previous run
    under the same labels would read as one counter that reset."""
    layout.root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(layout.data, ignore_errors=True)
    layout.data.mkdir()
    write_targets(layout, collector, proxies)
    layout.config.write_text(yaml.safe_dump(scrape_config(layout, interval), sort_keys=False))


def command(layout: PrometheusLayout, binary: str | None = None) -> list[str]:
    return [
        binary or prometheus_binary(),
        f"--config.file={layout.config}",
        f"--storage.tsdb.path={layout.data}",
        f"--web.listen-address={layout.listen}",
        "--storage.tsdb.retention.time=2d",
        "--log.level=warn",
    ]


Sample = tuple[dict[str, str], float]


class PrometheusClient:
    """The HTTP API (`/api/v1/query`), as Grafana and Kiali use it."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False

    def ready(self) -> bool:
        try:
            return self._session.get(f"{self.url}/-/ready", timeout=0.5).status_code == 200
        except requests.RequestException:
            return False

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        r = self._session.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout)
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(f"Prometheus rejected {promql!r}: {body.get('error', r.text[:200])}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(dict(s["metric"]), float(s["value"][1])) for s in data["result"]]

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], list[float]]]:
        params: dict[str, Any] = {"query": promql, "start": start, "end": end, "step": step}
        r = self._session.get(f"{self.url}/api/v1/query_range", params=params, timeout=self.timeout)
        body = r.json()
        if body.get("status") != "success":
            raise ValueError(f"Prometheus rejected {promql!r}: {body.get('error', r.text[:200])}")
        return [(dict(s["metric"]), [float(v[1]) for v in s["values"]]) for s in body["data"]["result"]]

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {m.get(label, ""): v for m, v in self.query(promql)}

    def last_scrape(self, job: str) -> float:
        """When the job's newest completed scrape started (its samples carry that timestamp); 0 if none yet."""
        try:
            found = self.query(f'max(timestamp(up{{job="{job}"}} == 1))')
        except (requests.RequestException, ValueError):
            return 0.0
        return found[0][1] if found else 0.0

    def wait_for_scrape(self, job: str, after: float, timeout: float = 30.0) -> float:
        """Block until a scrape of `job` that started after `after` (wall clock) has completed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ts = self.last_scrape(job)
            if ts > after:
                return ts
            time.sleep(0.1)
        raise TimeoutError(f"no scrape of job {job} after {after:.3f} within {timeout} s")

    def targets(self) -> list[Mapping[str, Any]]:
        r = self._session.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=self.timeout)
        return list(r.json()["data"]["activeTargets"])


def loopback_listen(port: int = 9090, rng: random.Random | None = None) -> str:
    """A probed `127.x.y.z:port` nobody uses: per-run addresses, so a run never meets a Prometheus the user runs."""
    r = rng or random.Random()
    for _ in range(50):
        ip = f"127.{r.randrange(20, 250)}.{r.randrange(1, 255)}.{r.randrange(10, 250)}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
        return f"{ip}:{port}"
    raise RuntimeError("no free loopback address for Prometheus")

"""Where a mesh's telemetry lives under its state dir, and what `mesh traces` / `mesh dashboard` read to find it.

`<state>/observability/`: `workloads.json` (the collector's directory), `traces.db` (the trace store),
`prometheus/` (config, file_sd targets, TSDB) and `endpoints.json` (addresses of the collector and Prometheus).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

from mesh.errors import MeshNotRunning


class Endpoints(BaseModel):
    collector_grpc: str
    collector_http: str
    prometheus: str  # base URL of the API, "" when Prometheus is not running


class TelemetryLayout:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "observability"

    @property
    def workloads(self) -> Path:
        return self.root / "workloads.json"

    @property
    def traces(self) -> Path:
        return self.root / "traces.db"

    @property
    def prometheus(self) -> Path:
        return self.root / "prometheus"

    @property
    def endpoints(self) -> Path:
        return self.root / "endpoints.json"

    def write_endpoints(self, endpoints: Endpoints) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.endpoints.with_suffix(".tmp")
        tmp.write_text(endpoints.model_dump_json(indent=1))
        os.replace(tmp, self.endpoints)

    def read_endpoints(self) -> Endpoints:
        try:
            return Endpoints.model_validate(json.loads(self.endpoints.read_text()))
        except (OSError, ValueError) as e:
            raise MeshNotRunning(
                f"no telemetry found under {self.root}",
                hint="start the mesh with observability: `mesh up --observability`",
            ) from e

"""The telemetry stack's files, and the message when Prometheus is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mesh.errors import TargetError
from mesh.observability.layout import TelemetryLayout
from mesh.observability.stack import ObservabilityOptions, TelemetryStack
from mesh.runtime import Proxy


def _proxies() -> list[Proxy]:
    return [Proxy("sidecar", "127.9.1.1", "reviews-v2-0", "default", {"app": "reviews", "version": "v2"}, "reviews")]


def test_prepare_writes_directory_targets_and_endpoints(tmp_path: Path) -> None:
    layout = TelemetryLayout(tmp_path)
    stack = TelemetryStack(layout, "127.9.0.3", ObservabilityOptions(prometheus=False))
    stack.prepare(_proxies())
    [w] = json.loads(layout.workloads.read_text())
    assert (w["name"], w["version"], w["service"]) == ("reviews-v2", "v2", "reviews.default.svc.cluster.local")
    assert layout.read_endpoints().collector_grpc == "127.9.0.3:4317"
    assert [s.name for s in stack.specs(tmp_path)] == ["telemetry-collector"]


def test_missing_prometheus_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_PROMETHEUS", str(tmp_path / "no-such-prometheus"))
    stack = TelemetryStack(TelemetryLayout(tmp_path), "127.9.0.3")
    with pytest.raises(TargetError, match="prometheus is not installed") as e:
        stack.prepare(_proxies())
    assert "apt-get install prometheus" in str(e.value)


def test_file_sd_paths_are_absolute_even_for_a_relative_state_dir() -> None:
    from mesh.observability.prometheus import PrometheusLayout, scrape_config

    config = scrape_config(PrometheusLayout(Path(".meshops/observability/prometheus"), "127.9.0.3:9090"))
    files = [f for job in config["scrape_configs"] for sd in job["file_sd_configs"] for f in sd["files"]]
    assert files and all(Path(f).is_absolute() for f in files)  # Prometheus reads them relative to its config

"""Telemetry of the local target (its collector, Prometheus and dashboard). Skipped against other targets."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _local_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--mesh") != "local":
        pytest.skip("exercises the local target's telemetry")

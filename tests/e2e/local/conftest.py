"""Tests of the local target itself (process supervision, control-plane outages, the CLI). Skipped elsewhere."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _local_only(request: pytest.FixtureRequest) -> None:
    if request.config.getoption("--mesh") != "local":
        pytest.skip("exercises the local target's own machinery")

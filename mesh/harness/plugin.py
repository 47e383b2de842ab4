"""pytest plugin (entry point `meshops`): `--mesh local|kind` and the mesh fixtures."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshops")
    group.addoption(
        "--mesh",
        choices=("local", "kind"),
        default="local",
        help="Target the e2e suite runs against: local (real Envoy on this machine) or kind (Kubernetes + Istio).",
    )

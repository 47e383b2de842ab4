"""A mesh under transparent interception (iptables) for this package, whatever `--mesh-interception` says."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mesh.api.config import MeshConfig
from mesh.dataplane import netns
from mesh.harness.under_test import LocalMeshUnderTest


@pytest.fixture(scope="module")
def captured(mesh_config: MeshConfig, pytestconfig: pytest.Config) -> Iterator[LocalMeshUnderTest]:
    ok, why = netns.available()
    if not ok:
        pytest.fail(f"transparent interception cannot run here: {why} (run as root; apt-get install iproute2 iptables)")
    m = LocalMeshUnderTest(mesh_config, interception="iptables", dns_proxy=pytestconfig.getoption("--mesh-dns-proxy"))
    try:
        yield m
    finally:
        m.stop()

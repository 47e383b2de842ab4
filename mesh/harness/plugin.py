"""pytest plugin (entry point `meshops`): brings a mesh up once per session and hands tests its data path.

    pytest tests/e2e                      # local mesh: real Envoy on this machine
    pytest tests/e2e --mesh kind          # a kind cluster with Istio (set up by `mesh up --target kubernetes`)

Fixtures: `mesh_config` (override it in conftest.py to test your own policies), `mesh` (the mesh under test),
`mesh_policies` (applies a changed config for one test and restores the original afterwards).

`make test` runs pytest-xdist with `--dist loadscope`: every module runs whole on one worker (its module-scoped
fixtures start once), and each worker that runs a test using `mesh` brings up one mesh of its own, on a loopback
block it claims (`mesh.dataplane.addresses.claim`) and a state dir of its own, shared by every test it runs there.
A test that changes the config goes through `mesh_policies` (or restores it itself), so any test may run after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # pytest loads this plugin in every process it starts (xdist's controller too), most of which
    # never bring a mesh up: the target and its control plane (gRPC, Envoy's protos: ~2 s) load in the fixture
    from mesh.api.config import MeshConfig
    from mesh.harness.under_test import MeshUnderTest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshops")
    group.addoption(
        "--mesh",
        choices=("local", "kind"),
        default="local",
        help="Target the e2e suite runs against: local (real Envoy on this machine) or kind (Kubernetes + Istio).",
    )
    group.addoption("--mesh-env", default=None, help="Policy environment for the mesh under test (default: dev).")
    group.addoption(
        "--mesh-policies", default=None, help="Policies package for the mesh under test (default: policies)."
    )
    group.addoption(
        "--mesh-interception",
        choices=("proxy", "iptables"),
        default="proxy",
        help="Local mesh only: apps reach their sidecars through HTTP_PROXY (proxy) or Istio's transparent iptables "
        "capture, a network namespace per pod (iptables; root, iproute2 and iptables).",
    )
    group.addoption(
        "--mesh-dns-proxy",
        action="store_true",
        default=False,
        help="Local mesh, iptables only: each sidecar answers its pod's DNS (Istio's DNS proxying) instead of hosts files.",
    )
    parser.addini("mesh_policies", "Policies package for the mesh under test", default="policies")
    parser.addini("mesh_env", "Policy environment for the mesh under test", default="dev")


def pytest_configure(config: pytest.Config) -> None:
    from mesh.controlplane import prepare_process

    prepare_process()
    config.addinivalue_line("markers", "e2e: drives the real data path (Envoy proxies, real sockets)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "mesh" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def mesh_config(pytestconfig: pytest.Config) -> MeshConfig:
    from mesh.compile import build_policies

    env = pytestconfig.getoption("--mesh-env") or pytestconfig.getini("mesh_env")
    policies = pytestconfig.getoption("--mesh-policies") or pytestconfig.getini("mesh_policies")
    return build_policies(env, policies)


@pytest.fixture(scope="session")
def mesh(pytestconfig: pytest.Config, mesh_config: MeshConfig) -> Iterator[MeshUnderTest]:
    from mesh.harness.under_test import MeshUnderTest

    target = pytestconfig.getoption("--mesh")
    m: MeshUnderTest
    if target == "local":
        from mesh.harness.under_test import LocalMeshUnderTest

        m = LocalMeshUnderTest(
            mesh_config,
            interception=pytestconfig.getoption("--mesh-interception"),
            dns_proxy=pytestconfig.getoption("--mesh-dns-proxy"),
        )
    else:
        from mesh.targets.kubernetes.target import KubernetesTarget

        m = MeshUnderTest(KubernetesTarget.from_environment(), mesh_config)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
def mesh_policies(mesh: MeshUnderTest) -> Iterator[Callable[[MeshConfig], None]]:
    """`mesh_policies(new_config)` applies for this test only; the original config is restored afterwards."""
    original = mesh.config
    changed = False

    def apply(config: MeshConfig) -> None:
        nonlocal changed
        changed = True
        mesh.apply(config)

    yield apply
    if changed:
        mesh.apply(original)

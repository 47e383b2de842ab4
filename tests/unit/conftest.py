"""Fixtures several unit-test packages share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.compile import build_policies
from mesh.runtime import gateway_proxy
from mesh.targets.local import LocalMesh, LocalOptions, LocalTarget
from mesh.targets.local.control import ControlServer, write_state


@pytest.fixture
def served(tmp_path: Path) -> Iterator[LocalTarget]:
    """A control server over an unstarted LocalMesh (no Envoy), recorded in a state file as `mesh up` records it."""
    mesh = LocalMesh(build_policies("dev"), LocalOptions(state_dir=tmp_path), progress=lambda m: None)
    mesh.gateway = gateway_proxy("127.0.0.1", {80: ("127.0.0.1", 8080), 443: ("127.0.0.1", 8443)})
    server = ControlServer(mesh).start()
    write_state(tmp_path, server.state("dev", "policies"))
    try:
        yield LocalTarget(LocalOptions(state_dir=tmp_path))
    finally:
        server.stop()
        mesh.stop()

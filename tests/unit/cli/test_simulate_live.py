"""`mesh simulate` follows the running local mesh's config (its revision named), and `--env` forces the policies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mesh.api import MeshConfig
from mesh.api.security import AuthorizationPolicy, Operation, Rule, RuleTo
from mesh.cli import cli, commands  # noqa: F401  (registers commands)
from mesh.compile import build_policies
from mesh.runtime import gateway_proxy
from mesh.targets.local import LocalMesh, LocalOptions
from mesh.targets.local.control import ControlServer, write_state

DENY_REVIEWS = AuthorizationPolicy(
    name="live-only-deny",
    namespace="default",
    action="DENY",
    rules=[Rule(to=[RuleTo(operation=Operation(paths=["/reviews/*"]))])],
)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, LocalMesh]]:
    """A control server over an unstarted LocalMesh running dev plus a DENY policy the environment lacks."""
    dev = build_policies("dev")
    config = MeshConfig(services=dev.services, resources=[*dev.resources, DENY_REVIEWS])
    mesh = LocalMesh(config, LocalOptions(state_dir=tmp_path), progress=lambda m: None)
    mesh.gateway = gateway_proxy("127.0.0.1", {80: ("127.0.0.1", 8080), 443: ("127.0.0.1", 8443)})
    server = ControlServer(mesh).start()
    write_state(tmp_path, server.state("dev", "policies"))
    try:
        yield tmp_path, mesh
    finally:
        server.stop()
        mesh.stop()


def _run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["simulate", *args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


REQUEST = ("--from", "productpage-v1-0", "http://reviews:9080/reviews/1")


def test_simulate_uses_the_live_mesh_and_says_so(live: tuple[Path, LocalMesh]) -> None:
    state_dir, mesh = live
    code, out, err = _run("--state-dir", str(state_dir), *REQUEST)
    assert code == 0 and f"config: live mesh revision {mesh.pilot.revision}" in err
    assert "denied by DENY policy ns[default]-policy[live-only-deny]-rule[0]" in out


def test_env_forces_the_environment(live: tuple[Path, LocalMesh]) -> None:
    state_dir, _ = live
    code, out, err = _run("--state-dir", str(state_dir), "--env", "dev", *REQUEST)
    assert code == 0 and "config: environment dev from policies/" in err
    assert "live-only-deny" not in out and "rbac:         allowed" in out


def test_without_a_mesh_the_environment_is_simulated(tmp_path: Path) -> None:
    code, _, err = _run("--state-dir", str(tmp_path), "http://bookinfo.local/productpage")
    assert code == 0 and "config: environment dev from policies/" in err


def test_mesh_env_in_the_environment_does_not_hide_the_live_mesh(
    live: tuple[Path, LocalMesh], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only `--env` on the command line forces the environment; an exported MESH_ENV is a default."""
    state_dir, mesh = live
    monkeypatch.setenv("MESH_ENV", "dev")
    code, out, err = _run("--state-dir", str(state_dir), *REQUEST)
    assert code == 0 and f"config: live mesh revision {mesh.pilot.revision}" in err and "live-only-deny" in out

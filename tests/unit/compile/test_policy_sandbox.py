"""Policy modules: a time limit and no silent exits in-process; `evaluate_policies` isolates untrusted ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.compile import (
    PolicyCrashed,
    PolicyExit,
    PolicyMemory,
    PolicyTimeout,
    build_policies,
    evaluate_policies,
    render,
)
from mesh.errors import PolicyError

ROOT = Path(__file__).resolve().parents[3]


def package(tmp_path: Path, body: str, top: str = "") -> Path:
    pkg = tmp_path / "untrusted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import os, sys\nfrom mesh.api import MeshConfig\n"
        + top
        + "ENVIRONMENTS = ('dev',)\n\n\ndef build(env):\n"
        + body
    )
    return pkg


def test_sandbox_returns_the_same_typed_config_with_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    inproc, sandboxed = build_policies("dev"), evaluate_policies("policies", "dev")
    assert render(sandboxed) == render(inproc)
    assert [r.source for r in sandboxed.resources] == [r.source for r in inproc.resources]
    assert [s.source for s in sandboxed.services] == [s.source for s in inproc.services]


@pytest.mark.parametrize(
    "body,error,message",
    [
        ("    sys.exit(0)\n", PolicyExit, r"called sys\.exit\(0\)"),
        ("    os._exit(0)\n", PolicyExit, r"exited \(status 0\) without returning"),
        ("    while True:\n        pass\n", PolicyTimeout, "did not finish within 2s"),
        ("    return bytearray(2 * 1024**3)\n", PolicyMemory, "MB"),
        ("    return {}['missing']\n", PolicyError, "KeyError"),
        ("    os.kill(os.getpid(), 9)\n", PolicyCrashed, "died"),
    ],
    ids=["sys-exit", "os-exit", "endless-loop", "memory", "exception", "killed"],
)
def test_sandbox_names_the_cause(tmp_path: Path, body: str, error: type[PolicyError], message: str) -> None:
    timeout = 2 if error is PolicyTimeout else 30  # the others must fail for their own reason, even on a busy machine
    with pytest.raises(error, match=message):
        evaluate_policies(package(tmp_path, body), "dev", timeout=timeout, memory_mb=512)


def test_sandbox_environment_is_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_SECRET_TOKEN", "x")
    pkg = package(tmp_path, "    assert 'MESH_SECRET_TOKEN' not in os.environ, 'leaked'\n    return MeshConfig()\n")
    assert evaluate_policies(pkg, "dev", timeout=10).resources == []


def test_in_process_exit_at_import_or_build_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyExit, match=r"called sys\.exit"):
        build_policies("dev", package(tmp_path, "    return MeshConfig()\n", top="sys.exit(3)\n"))


def test_in_process_time_limit(tmp_path: Path) -> None:
    with pytest.raises(PolicyTimeout, match=r"within 1s.*untrusted/__init__\.py"):
        build_policies("dev", package(tmp_path, "    while True:\n        pass\n"), timeout=1)

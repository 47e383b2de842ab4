"""The sandbox's isolation holds for both ways of running it: a child of the pre-started fork server (the default)
and a fresh `python -I` interpreter. Each property is checked through what the policies module itself can see."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mesh.errors import RenderFailed
from mesh.gitops.render import Limits, render

LIMITS = Limits(timeout=20)
MODES = pytest.mark.parametrize("fork", [True, False], ids=["forkserver", "exec"])


def _module(tmp_path: Path, code: str) -> Path:
    pkg = tmp_path / "policies"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(code)
    return tmp_path


def _cause(tmp_path: Path, code: str, fork: bool, limits: Limits = LIMITS) -> str:
    with pytest.raises(RenderFailed) as e:
        render(_module(tmp_path, code), "policies", "dev", limits, fork=fork)
    return str(e.value)


@MODES
def test_it_runs_in_another_process_under_the_limits(tmp_path: Path, fork: bool) -> None:
    code = "import os, resource\nraise RuntimeError((os.getpid(), resource.getrlimit(resource.RLIMIT_AS)[0], os.getcwd()))\n"
    cause = _cause(tmp_path, code, fork, Limits(timeout=20, memory=512 << 20))
    assert f"({os.getpid()}," not in cause  # not the reconciler
    assert str(512 << 20) in cause
    assert str(tmp_path) in cause  # runs in the commit's tree


@MODES
def test_it_sees_a_clean_environment(tmp_path: Path, fork: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_secret")
    cause = _cause(tmp_path, "import os\nraise RuntimeError(sorted(os.environ))\n", fork)
    assert "GITHUB_TOKEN" not in cause and "PATH" in cause and "HOME" in cause


@MODES
def test_a_hang_is_killed_at_the_time_limit_even_if_it_ignores_signals(tmp_path: Path, fork: bool) -> None:
    code = "import signal\nfor s in (signal.SIGALRM, signal.SIGTERM, signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\nimport time\nwhile True:\n    time.sleep(0.01)\n"
    t0 = time.monotonic()
    cause = _cause(tmp_path, code, fork, Limits(timeout=2))
    assert "did not finish within 2s" in cause
    assert time.monotonic() - t0 < 10


def test_one_evaluation_leaves_nothing_for_the_next(tmp_path: Path) -> None:
    """A forked child mutating what the server preloaded changes only its own copy."""
    _cause(tmp_path / "a", "import mesh.api\nmesh.api.LEAKED = 1\nraise RuntimeError('first')\n", True)
    cause = _cause(tmp_path / "b", "import mesh.api\nraise RuntimeError(hasattr(mesh.api, 'LEAKED'))\n", True)
    assert "RuntimeError: False" in cause


def test_the_fork_server_survives_a_child_that_kills_its_parent_group(tmp_path: Path) -> None:
    """A child that signals its own process group (its own session) cannot take the server down; and a server that
    died anyway is restarted for the next evaluation."""
    from mesh.gitops.render import fork_server

    _cause(tmp_path / "a", "import os, signal\nos.killpg(0, signal.SIGKILL)\n", True)
    ok = _module(tmp_path / "b", "raise RuntimeError('still here')\n")
    proc = fork_server()._proc
    assert proc is not None and proc.poll() is None
    proc.kill()
    proc.wait()
    with pytest.raises(RenderFailed, match="still here"):
        render(ok, "policies", "dev", fork=True)

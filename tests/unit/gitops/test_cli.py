"""`mesh reconcile` and `mesh diff`: clear errors with documented exit codes, and the happy path (fake target)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import mesh.cli.reconcile as rc
from mesh.cli import cli
from tests.unit.verify.fakemesh import FakeTarget

from .gitrepo import PolicyRepo


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch) -> FakeTarget:
    fake = FakeTarget()
    monkeypatch.setattr(rc, "_target", lambda name, state_dir: fake)
    return fake


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_missing_repo_ref_and_path_exit_66_with_a_hint(tmp_path: Path, target: FakeTarget) -> None:
    code, out = run("reconcile", "once", "--repo", str(tmp_path / "nope"), "--state-dir", str(tmp_path))
    assert code == 66 and "does not exist" in out and "hint:" in out
    repo = PolicyRepo.create(tmp_path)
    code, out = run("reconcile", "once", "--repo", str(repo.origin), "--ref", "gone", "--state-dir", str(tmp_path))
    assert code == 66 and "ref 'gone' not found" in out
    code, out = run("reconcile", "once", "--repo", str(repo.origin), "--path", "nope", "--state-dir", str(tmp_path))
    assert code == 65 and "path 'nope' does not exist" in out


def test_policies_that_do_not_load_exit_65(tmp_path: Path, target: FakeTarget) -> None:
    repo = PolicyRepo.create(tmp_path)
    repo.write("policies/__init__.py", "import nothing_here\n")
    repo.commit("broken import")
    code, out = run("reconcile", "once", "--repo", str(repo.origin), "--state-dir", str(tmp_path))
    assert code == 65 and "ModuleNotFoundError" in out


def test_webhook_without_secret_exits_78(tmp_path: Path, target: FakeTarget, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_WEBHOOK_SECRET", raising=False)
    code, out = run("reconcile", "--repo", str(tmp_path), "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path))
    assert code == 78 and "no secret" in out


def test_once_status_history_and_diff(tmp_path: Path, target: FakeTarget) -> None:
    repo = PolicyRepo.create(tmp_path)
    base = ["--repo", str(repo.origin), "--state-dir", str(tmp_path)]
    code, out = run("reconcile", "once", *base)
    assert code == 0 and "dev: applied" in out
    code, out = run("reconcile", "status", "--state-dir", str(tmp_path), "-o", "json")
    ready = json.loads(out)[0]["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Applied")
    repo.set_dev_weight(30)
    code, out = run("diff", *base)
    assert code == 0 and "~ VirtualService default/reviews" in out and "weight: 30" in out
    code, out = run("reconcile", "history", "--state-dir", str(tmp_path))
    assert code == 0 and "applied" in out
    code, out = run("reconcile", "status", "--state-dir", str(tmp_path))
    assert "True (Applied)" in out


def test_help_explains_how_to_start() -> None:
    code, out = run("reconcile", "--help")
    assert code == 0 and "install-hook" in out and "Exit codes" in out and "'v*'" in out

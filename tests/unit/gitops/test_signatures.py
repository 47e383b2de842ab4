"""Signed commits: with a keyring configured, only commits whose signature verifies against it are applied.

A throwaway ed25519 key is generated per test module (gpg from Debian's `gnupg`); a second key stands for a
stranger. Every GNUPGHOME lives in a short temp dir (gpg-agent's socket path limit) and its agent is stopped."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.gitops.reconciler import Reconciler, Settings
from mesh.gitops.render import Limits
from mesh.gitops.source import SourceSpec
from mesh.gitops.state import StateStore
from tests.unit.verify.fakemesh import FakeTarget

from .gitrepo import GIT_ENV, PolicyRepo


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(
        ["gpg", "--batch", "--homedir", str(home), *args], input=stdin, capture_output=True, check=True
    ).stdout


def _key(home: Path, who: str) -> str:
    _gpg(home, "--passphrase", "", "--quick-gen-key", f"{who} <{who}@example.com>", "ed25519", "sign", "never")
    out = _gpg(home, "--with-colons", "--list-secret-keys").decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@pytest.fixture(scope="module")
def keys() -> Iterator[dict[str, object]]:
    if shutil.which("gpg") is None:
        pytest.fail("signed-commit tests need gpg: apt-get install gnupg")
    root = Path(tempfile.mkdtemp(prefix="mgpg-", dir="/tmp"))
    homes = {name: root / name for name in ("dev", "stranger", "keyring")}
    for home in homes.values():
        home.mkdir(mode=0o700)
    try:
        dev, stranger = _key(homes["dev"], "dev"), _key(homes["stranger"], "stranger")
        _gpg(homes["keyring"], "--import", stdin=_gpg(homes["dev"], "--export", dev))
        yield {"homes": homes, "dev": dev, "stranger": stranger}
    finally:
        for home in homes.values():
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _signed_commit(repo: PolicyRepo, home: Path, key: str, message: str) -> str:
    env = {**GIT_ENV, "GNUPGHOME": str(home)}

    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *a], cwd=repo.work, env=env, check=True, capture_output=True, text=True)

    run("add", "-A")
    run("-c", f"user.signingkey={key}", "commit", "-q", "-S", "--allow-empty", "-m", message)
    run("push", "-q", "origin", "HEAD")
    return run("rev-parse", "HEAD").stdout.strip()


def _reconciler(repo: PolicyRepo, tmp_path: Path, keyring: Path) -> Reconciler:
    spec = SourceSpec(env="dev", repo=str(repo.origin), ref="main", path="policies")
    settings = Settings(limits=Limits(timeout=30), attempts=2, backoff_max=0.05, keyring=keyring)
    return Reconciler(spec, FakeTarget(), StateStore(tmp_path / "state.db"), tmp_path / "cache", settings)


def test_only_commits_signed_by_the_keyring_are_applied(keys: dict[str, object], tmp_path: Path) -> None:
    homes = keys["homes"]
    assert isinstance(homes, dict)
    repo = PolicyRepo.create(tmp_path)  # its first commit is unsigned
    r = _reconciler(repo, tmp_path, homes["keyring"])
    unsigned = r.reconcile()
    assert unsigned.outcome == "failed signature" and "not signed" in unsigned.reason, unsigned.reason
    assert r.store.env("dev").last_applied is None  # never applied

    good = _signed_commit(repo, homes["dev"], str(keys["dev"]), "signed by dev")
    result = r.reconcile()
    assert (result.outcome, result.sha) == ("applied", good), result.reason

    bad = _signed_commit(repo, homes["stranger"], str(keys["stranger"]), "signed by a stranger")
    result = r.reconcile()
    assert result.outcome == "failed signature" and "no valid signature" in result.reason, result.reason
    assert r.store.env("dev").last_applied == good
    assert r.reconcile().action in ("skipped", "unchanged")  # not retried blindly
    assert bad != good

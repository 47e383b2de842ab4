"""Real git repositories in temp dirs holding a copy of the sample policies, for the reconciler's tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

POLICIES = Path(__file__).resolve().parents[3] / "policies"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/nonexistent",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class PolicyRepo:
    """A working clone whose pushes go to a bare `origin` (what the reconciler watches)."""

    work: Path
    origin: Path

    @classmethod
    def create(cls, root: Path, branch: str = "main") -> PolicyRepo:
        origin, work = root / "origin.git", root / "work"
        git(root, "init", "-q", "--bare", "-b", branch, str(origin))
        git(root, "init", "-q", "-b", branch, str(work))
        shutil.copytree(POLICIES, work / "policies", ignore=shutil.ignore_patterns("__pycache__"))
        git(work, "remote", "add", "origin", str(origin))
        repo = cls(work, origin)
        repo.commit("policies: the sample, dev at 50/50")
        return repo

    def write(self, rel: str, text: str) -> None:
        p = self.work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def set_dev_weight(self, weight: int, env: str = "dev") -> str:
        init = self.work / "policies" / "__init__.py"
        pattern = rf'"{env}": Values\(reviews_canary_weight=\d+'
        text = re.sub(pattern, f'"{env}": Values(reviews_canary_weight={weight}', init.read_text())
        init.write_text(text)
        return self.commit(f"{env}: reviews canary at {weight}%")

    def commit(self, message: str, push: bool = True) -> str:
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        if push:
            git(self.work, "push", "-q", "origin", "HEAD")
        return git(self.work, "rev-parse", "HEAD")

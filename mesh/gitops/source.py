"""Where an environment's policies come from: one ref of one repository, fetched alone into a cache.

Only the configured ref is fetched (a branch, or the newest tag matching a pattern for prod-style promotion). Each
commit is materialised once, read-only, from `git archive` (no checkout hooks, no submodule recursion). Dangerous
transports and options are refused before git ever runs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

from mesh.errors import SourceError, TransientError, UnsafeSource

if TYPE_CHECKING:
    import git


def _git() -> Any:
    """GitPython, imported when first used: it refuses to import without a git binary, and `mesh up` needs none."""
    import git

    return git


_SAFE_SCHEMES = ("https://", "http://", "ssh://", "git://", "file://")
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")


class SourceSpec(BaseModel):
    """One environment's source: repo (path, bare repo or URL), ref (branch or tag pattern like `v*`), path in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str
    repo: str
    ref: str = "main"
    path: str = "."
    allow_remote_submodules: bool = False

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        if v.startswith("/") or ".." in Path(v).parts:
            raise ValueError(f"path must stay inside the repository, got {v!r}")
        return v

    @property
    def is_tag_pattern(self) -> bool:
        return any(c in self.ref for c in "*?[")


def check_url(url: str) -> str:
    """Refuse transports that run commands (ext::, fd::) and anything git would read as an option."""
    if url.startswith("-") or "--upload-pack" in url or "--receive-pack" in url or "--config" in url:
        raise UnsafeSource(f"refusing repository {url!r}: it looks like a git option", hint="give a path or a URL")
    if "::" in url.split("/", 1)[0] or url.lower().startswith(("ext::", "fd::")):
        raise UnsafeSource(
            f"refusing repository {url!r}: remote helpers (ext::, fd::, ...) run arbitrary commands",
            hint="use a local path, file://, https://, ssh:// or git@host:path",
        )
    if url.startswith(_SAFE_SCHEMES) or _SCP_LIKE.match(url):
        return url
    path = Path(url).expanduser()
    if not path.exists():
        raise SourceError(f"repository {url!r} does not exist", hint="check the --repo path, or clone it first")
    return str(path.resolve())


def check_ref(ref: str) -> str:
    if ref.startswith("-") or not re.fullmatch(r"[\w./*?\[\]+-]+", ref) or ".." in ref:
        raise UnsafeSource(f"refusing ref {ref!r}", hint="a branch name like main or a tag pattern like v*")
    return ref


def _version_key(tag: str) -> tuple[tuple[int, object], ...]:
    """Tags sort by their numeric parts (v1.10 after v1.9), text parts lexically."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", tag) if p)


@dataclass(frozen=True)
class Revision:
    sha: str
    ref: str  # the branch or tag it came from
    message: str
    author: str


class GitSource:
    """A bare cache repository per environment; `fetch()` returns the newest Revision of the configured ref."""

    def __init__(self, spec: SourceSpec, cache_dir: Path) -> None:
        self.spec = spec
        self.url = check_url(spec.repo)
        self.ref = check_ref(spec.ref)
        key = hashlib.sha256(f"{self.url}\0{spec.env}".encode()).hexdigest()[:16]
        self.dir = cache_dir / f"{spec.env}-{key}"
        self.git_dir = self.dir / "cache.git"
        self.commits_dir = self.dir / "commits"

    def _repo(self) -> git.Repo:
        if not self.git_dir.exists():
            self.git_dir.parent.mkdir(parents=True, exist_ok=True)
            repo: git.Repo = _git().Repo.init(self.git_dir, bare=True)
            return repo
        existing: git.Repo = _git().Repo(self.git_dir)
        return existing

    def _git_env(self) -> dict[str, str]:
        # protocol.allow=user would still allow ext:: given by us; we never pass one, but say it twice
        return {
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",
            "GIT_TERMINAL_PROMPT": "0",
        }

    def remote_ref(self) -> str:
        """The full ref to fetch: the branch, or the newest tag matching the pattern."""
        repo = self._repo()
        try:
            out = str(repo.git.ls_remote("--", self.url, env=self._git_env()))
        except _git().GitCommandError as e:
            raise TransientError(f"cannot reach {self.url}: {_stderr(e)}") from None
        refs = [line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line]
        if self.spec.is_tag_pattern:
            tags = [r.removeprefix("refs/tags/") for r in refs if r.startswith("refs/tags/") and not r.endswith("^{}")]
            matching = sorted((t for t in tags if fnmatch.fnmatchcase(t, self.ref)), key=_version_key)
            if not matching:
                raise SourceError(
                    f"no tag matches {self.ref!r} in {self.url}", hint="push a tag (git tag v1.0 && git push --tags)"
                )
            return f"refs/tags/{matching[-1]}"
        for candidate in (f"refs/heads/{self.ref}", f"refs/tags/{self.ref}", self.ref):
            if candidate in refs:
                return candidate
        raise SourceError(
            f"ref {self.ref!r} not found in {self.url}",
            hint=f"push the branch first (git push origin {self.ref}) or set --ref to an existing branch",
        )

    def fetch(self) -> Revision:
        ref = self.remote_ref()
        repo = self._repo()
        local = f"refs/meshops/{self.spec.env}"
        try:
            repo.git.fetch(
                "--no-tags",
                "--no-recurse-submodules",
                "--force",
                "--",
                self.url,
                f"+{ref}:{local}",
                env=self._git_env(),
            )
        except _git().GitCommandError as e:
            raise TransientError(f"cannot fetch {ref} from {self.url}: {_stderr(e)}") from None
        commit = repo.commit(local)
        return Revision(
            commit.hexsha,
            ref.removeprefix("refs/heads/").removeprefix("refs/tags/"),
            str(commit.message).strip(),
            str(commit.author),
        )

    def resolve(self, sha: str) -> str:
        """A full commit id from an abbreviation, among the fetched commits."""
        try:
            return str(self._repo().commit(sha).hexsha)
        except (ValueError, _git().BadName):
            raise SourceError(
                f"commit {sha!r} is not in the fetched history of {self.spec.ref}", hint="see `mesh reconcile history`"
            ) from None

    def verify_signature(self, sha: str, gnupghome: Path) -> str | None:
        """Why `sha` is not signed by a key in `gnupghome` (`git verify-commit`), or None when it is."""
        if shutil.which("gpg") is None:
            return "signed commits are required but gpg is not installed (Debian: apt-get install gnupg)"
        self._repo()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "GNUPGHOME": str(gnupghome), "LANG": "C"}
        proc = subprocess.run(
            ["git", "--git-dir", str(self.git_dir), "verify-commit", "--raw", sha],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode == 0 and "[GNUPG:] VALIDSIG" in proc.stderr:
            return None
        if "[GNUPG:]" not in proc.stderr:  # gpg never ran: there is no signature to check
            return f"{sha[:12]} is not signed {proc.stderr.strip()[:200]}".rstrip()
        status = [x.split()[1] for x in proc.stderr.splitlines() if x.startswith("[GNUPG:] ")]
        return f"{sha[:12]} has no valid signature from the keyring ({', '.join(status) or proc.stderr.strip()[:200]})"

    def has_commit(self, sha: str) -> bool:
        try:
            self._repo().commit(sha)
            return True
        except (ValueError, _git().BadName):
            return False

    def materialise(self, sha: str) -> Path:
        """The commit's tree at `path`, extracted once into a read-only directory."""
        out = self.commits_dir / sha
        if out.exists():
            return out / self.spec.path
        repo = self._repo()
        self._check_submodules(repo, sha)
        data = io.BytesIO()
        repo.archive(data, sha, format="tar")
        data.seek(0)
        tmp = self.commits_dir / f".{sha}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=data) as tar:
            tar.extractall(tmp, filter="data")
        _read_only(tmp)
        tmp.rename(out)
        target = out / self.spec.path
        if not target.exists():
            raise SourceError(
                f"path {self.spec.path!r} does not exist in {self.url} at {sha[:12]}",
                hint="set --path to the directory holding the policies (a Python package or Istio YAML)",
            )
        return target

    def _check_submodules(self, repo: git.Repo, sha: str) -> None:
        try:
            text = repo.git.show(f"{sha}:.gitmodules")
        except _git().GitCommandError:
            return
        urls = re.findall(r"^\s*url\s*=\s*(\S+)", text, flags=re.M)
        remote = [u for u in urls if not u.startswith(("./", "../"))]
        if remote and not self.spec.allow_remote_submodules:
            raise UnsafeSource(
                f"commit {sha[:12]} declares submodules with remote URLs ({', '.join(remote)}); they are not fetched",
                hint="vendor the policies into the repository, or allow remote submodules explicitly",
            )


def _read_only(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for f in filenames:
            p = Path(dirpath, f)
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        Path(dirpath).chmod(0o555)


def _stderr(e: git.GitCommandError) -> str:
    text = str(e.stderr or e).strip().splitlines()
    return text[-1].strip().removeprefix("stderr: ").strip("'") if text else str(e)

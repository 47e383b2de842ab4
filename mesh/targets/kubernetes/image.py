"""The sample app's image: its build context assembled from the installed package, tagged by the context's digest.

A tag that names the content means a rebuilt image reaches the pods: the Deployments change with it and roll.
The context is built from the `mesh` package itself (no source checkout needed), into a directory of its own so
`docker build` never sends anything else.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mesh

PACKAGE = Path(mesh.__file__).resolve().parent
DOCKERFILE = Path(__file__).resolve().parent / "sampleapp.Dockerfile"


def context_files() -> dict[str, Path]:
    """Path inside the build context -> the installed file it comes from (what the Dockerfile COPYs)."""
    files = {"Dockerfile": DOCKERFILE, "mesh/__init__.py": PACKAGE / "__init__.py"}
    for p in sorted((PACKAGE / "sampleapp").glob("*.py")):
        files[f"mesh/sampleapp/{p.name}"] = p
    return files


def context_digest(files: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for name, path in sorted(files.items()):
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class SampleImage:
    context: Path
    digest: str
    tag: str  # repository:digest


def prepare(repository: str, build_root: Path) -> SampleImage:
    """Write the build context under build_root/<digest> (idempotent) and name the image by that digest."""
    build_root.mkdir(parents=True, exist_ok=True)
    files = context_files()
    digest = context_digest(files)
    context = build_root / f"sampleapp-{digest}"
    if not context.exists():
        staging = Path(tempfile.mkdtemp(prefix=".sampleapp-", dir=build_root))
        for name, src in files.items():
            dest = staging / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        try:
            staging.rename(context)  # complete or absent, even when two runs race
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return SampleImage(context=context, digest=digest, tag=f"{repository}:{digest}")

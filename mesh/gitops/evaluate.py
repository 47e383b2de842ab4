"""Runs inside the sandbox interpreter (`python -I -m mesh.gitops.evaluate OUT ENV PATH`): policies -> JSON.

Policies from git are code; this module is the only thing that executes them, in a child process with a clean
environment and resource limits (see mesh.gitops.render). It writes the typed config as JSON to OUT: services as
models, Istio resources as manifests with their source locations, plus any probes and rollouts the repo declares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mesh.api.config import MeshConfig
from mesh.compile.importer import load_file
from mesh.errors import MeshError


def _python(env: str, path: Path) -> tuple[MeshConfig, list[Any], list[Any]]:
    from mesh.compile.policies import build, load_module

    config = build(env, path)
    module = load_module(path)
    probes = list(module.probes(env)) if callable(getattr(module, "probes", None)) else []
    rollouts = list(module.rollouts(env)) if callable(getattr(module, "rollouts", None)) else []
    return config, probes, rollouts


def _yaml_dir(path: Path) -> tuple[MeshConfig, list[Any], list[Any]]:
    config = MeshConfig()
    probes: list[Any] = []
    for f in sorted([*path.rglob("*.yaml"), *path.rglob("*.yml")]):
        if f.name in ("probes.yaml", "probes.yml"):
            probes += (yaml.safe_load(f.read_text()) or {}).get("probes", [])
            continue
        part = load_file(f.relative_to(Path.cwd()) if f.is_relative_to(Path.cwd()) else f)
        config.add(*part.services, *part.resources)
    return config, probes, []


def _dump(item: Any) -> Any:
    return item.model_dump(mode="json") if hasattr(item, "model_dump") else item


def main(out: str, env: str, path_arg: str) -> int:
    path = Path(path_arg)
    try:
        if (path / "__init__.py").exists() or path.suffix == ".py":
            config, probes, rollouts = _python(env, path)
        elif path.is_dir():
            config, probes, rollouts = _yaml_dir(path)
        else:
            raise MeshError(f"{path_arg}: neither a policies package (__init__.py) nor a directory of Istio YAML")
    except MeshError as e:
        Path(out).write_text(json.dumps({"error": str(e)}))
        return 3
    result = {
        "services": [s.model_dump(mode="json") for s in config.services],
        "resources": [
            {"manifest": r.to_manifest(), "source": r.source.model_dump() if r.source else None}
            for r in config.sorted_resources()
        ],
        "probes": [_dump(p) for p in probes],
        "rollouts": [_dump(r) for r in rollouts],
    }
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

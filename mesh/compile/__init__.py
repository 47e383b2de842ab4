"""Compile: typed policies <-> Istio/Kubernetes manifests (render, import, Python generation)."""

from mesh.compile.importer import Observed, load_file, load_stream, load_yaml
from mesh.compile.policies import (
    PolicyCrashed,
    PolicyExit,
    PolicyMemory,
    PolicyTimeout,
    evaluate_policies,
)
from mesh.compile.policies import build as build_policies
from mesh.compile.pygen import to_python
from mesh.compile.render import dump_json, dump_yaml, render, render_istio, render_workloads

__all__ = [
    "Observed",
    "PolicyCrashed",
    "PolicyExit",
    "PolicyMemory",
    "PolicyTimeout",
    "build_policies",
    "dump_json",
    "dump_yaml",
    "evaluate_policies",
    "load_file",
    "load_stream",
    "load_yaml",
    "render",
    "render_istio",
    "render_workloads",
    "to_python",
]

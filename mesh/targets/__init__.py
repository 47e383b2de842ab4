"""Targets: where a compiled MeshConfig runs. `local` (real Envoy on this machine) and `kubernetes`."""

from __future__ import annotations

from mesh.analyze.context import TargetCapabilities

# Fields the local target cannot honour yet. The analyzer turns each into an MSH0100 error.
LOCAL_UNSUPPORTED: dict[str, str] = {}

KUBERNETES = TargetCapabilities(name="kubernetes", unsupported={}, needs="image")


def capabilities(target: str) -> TargetCapabilities:
    if target == "local":
        return TargetCapabilities(name="local", unsupported=LOCAL_UNSUPPORTED, needs="command")
    if target == "kubernetes":
        return KUBERNETES
    raise ValueError(f"unknown target {target!r}: choose local or kubernetes")

"""The e2e suite runs unchanged against every target (`--mesh local|kind`); it asserts what users observe."""

from __future__ import annotations

import copy

from mesh.api import MeshConfig, Resource


def replace(config: MeshConfig, *resources: Resource) -> MeshConfig:
    """A copy of `config` where each given resource replaces its namesake (or is added)."""
    keys = {r.key for r in resources}
    return MeshConfig(
        services=list(config.services),
        resources=[copy.deepcopy(r) for r in config.resources if r.key not in keys] + list(resources),
    )


def without(config: MeshConfig, kind: str, name: str, namespace: str = "default") -> MeshConfig:
    return MeshConfig(
        services=list(config.services),
        resources=[r for r in config.resources if r.key != (kind, namespace, name)],
    )

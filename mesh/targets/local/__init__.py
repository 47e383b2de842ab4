"""The local target: a whole mesh on this machine — real Envoy sidecars and gateway, our control plane."""

from mesh.targets.local.mesh import LocalMesh
from mesh.targets.local.options import LocalOptions
from mesh.targets.local.target import LocalTarget

__all__ = ["LocalMesh", "LocalOptions", "LocalTarget"]

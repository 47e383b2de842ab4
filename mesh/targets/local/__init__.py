"""The local target: a whole mesh on this machine — real Envoy sidecars and gateway, our control plane."""

from mesh.targets.local.mesh import LocalMesh, LocalOptions

__all__ = ["LocalMesh", "LocalOptions"]

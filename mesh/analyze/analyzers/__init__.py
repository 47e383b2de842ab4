"""One module per area; importing this package registers every analyzer."""

from mesh.analyze.analyzers import conflicts, gateways, matches, references, security, subsets, targets, weights

__all__ = ["conflicts", "gateways", "matches", "references", "security", "subsets", "targets", "weights"]

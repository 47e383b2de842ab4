"""One module per area; importing this package registers every analyzer."""

from mesh.analyze.analyzers import (
    capabilities,
    conflicts,
    gateways,
    matches,
    ratelimits,
    references,
    security,
    sidecars,
    subsets,
    tcp,
    weights,
)

__all__ = [
    "capabilities",
    "conflicts",
    "gateways",
    "matches",
    "ratelimits",
    "references",
    "security",
    "sidecars",
    "subsets",
    "tcp",
    "weights",
]

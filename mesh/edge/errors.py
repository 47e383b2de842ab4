"""Edge errors, joining the tree in `mesh.errors`:

TargetError
├── EdgeUnavailable        no HAProxy binary (the hint says how to install it)
└── EdgeConfigRejected     HAProxy refused a configuration; the running edge keeps the previous one
PolicyError
└── EdgePolicyError        an Edge policy that cannot run (a listener's credential is missing)
"""

from __future__ import annotations

from mesh.errors import PolicyError, TargetError


class EdgeUnavailable(TargetError):
    pass


class EdgeConfigRejected(TargetError):
    pass


class EdgePolicyError(PolicyError):
    pass

"""exportTo: the namespaces an object is visible in (Istio's pkg/config/visibility)."""

from __future__ import annotations

from collections.abc import Sequence

from mesh.api.networking import VirtualService

ALL = "*"
LOCAL = "."


def export_scope(export_to: Sequence[str], namespace: str) -> frozenset[str] | None:
    """The namespaces that see an object of `namespace`; None means every namespace (no exportTo, or `*`)."""
    if not export_to or ALL in export_to:
        return None
    return frozenset(namespace if ns == LOCAL else ns for ns in export_to)


def scopes_overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    """Whether some namespace sees both objects."""
    return a is None or b is None or bool(a & b)


def virtual_service_visible(vs: VirtualService, namespace: str) -> bool:
    """Whether a VirtualService applies to proxies of `namespace` (Istio's VirtualServicesForGateway: sidecars and
    gateways alike see only the VirtualServices exported to their own namespace; `~` exports to none)."""
    scope = export_scope(vs.export_to, vs.namespace)
    return scope is None or namespace in scope

"""PeerAuthentication precedence: the effective inbound mTLS mode of a workload, per port."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mesh.api.security import PeerAuthentication
from mesh.istio.constants import DEFAULT_MTLS_MODE, ROOT_NAMESPACE


def _level(pa: PeerAuthentication, namespace: str, labels: Mapping[str, str]) -> int | None:
    """0 workload selector in its namespace, 1 namespace-wide, 2 mesh-wide (root namespace), None: not applicable."""
    selector = pa.selector.match_labels if pa.selector else {}
    if pa.namespace == namespace and selector:
        return 0 if selector.items() <= labels.items() else None
    if pa.namespace == namespace:
        return 1
    if pa.namespace == ROOT_NAMESPACE and not selector:
        return 2
    return None


def effective_peer_authentication(
    policies: Iterable[PeerAuthentication], namespace: str, labels: Mapping[str, str]
) -> PeerAuthentication | None:
    """The most specific policy that decides a mode (UNSET inherits from the next level up); ties by name."""
    ranked = sorted(
        ((level, pa.name, pa) for pa in policies if (level := _level(pa, namespace, labels)) is not None),
        key=lambda c: (c[0], c[1]),
    )
    return next((pa for _, _, pa in ranked if pa.mtls is not None and pa.mtls.mode != "UNSET"), None)


def mtls_mode(
    policies: Iterable[PeerAuthentication], namespace: str, labels: Mapping[str, str], port: int | None = None
) -> str:
    """STRICT, PERMISSIVE or DISABLE; a port-level setting of the effective policy wins over its workload mode."""
    pa = effective_peer_authentication(policies, namespace, labels)
    if pa is None:
        return DEFAULT_MTLS_MODE
    if port is not None and port in pa.port_level_mtls and pa.port_level_mtls[port].mode != "UNSET":
        return pa.port_level_mtls[port].mode
    return pa.mtls.mode if pa.mtls and pa.mtls.mode != "UNSET" else DEFAULT_MTLS_MODE

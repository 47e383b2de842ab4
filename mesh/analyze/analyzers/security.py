"""IST0113: a DestinationRule must not send plaintext to workloads that require STRICT mTLS."""

from __future__ import annotations

from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.config import MeshConfig
from mesh.api.security import PeerAuthentication
from mesh.api.workloads import Service, Version

ROOT_NAMESPACE = "istio-system"


def effective_peer_authentication(config: MeshConfig, svc: Service, version: Version) -> PeerAuthentication | None:
    """Istio's precedence: workload selector in its namespace > namespace-wide > mesh-wide (root namespace)."""
    labels = svc.pod_labels(version)
    candidates = []
    for pa in config.peer_authentications:
        if pa.namespace == svc.namespace and pa.selector and pa.selector.match_labels:
            if pa.selector.match_labels.items() <= labels.items():
                candidates.append((0, pa.name, pa))
        elif pa.namespace == svc.namespace and not (pa.selector and pa.selector.match_labels):
            candidates.append((1, pa.name, pa))
        elif pa.namespace == ROOT_NAMESPACE and not (pa.selector and pa.selector.match_labels):
            candidates.append((2, pa.name, pa))
    candidates.sort(key=lambda c: (c[0], c[1]))
    # UNSET inherits from the next level up.
    for _, _, pa in candidates:
        if pa.mtls is not None and pa.mtls.mode != "UNSET":
            return pa
    return None


def mtls_mode(config: MeshConfig, svc: Service, version: Version, port: int | None = None) -> str:
    """The effective inbound mTLS mode of a workload (Istio's default is PERMISSIVE)."""
    pa = effective_peer_authentication(config, svc, version)
    if pa is None:
        return "PERMISSIVE"
    if port is not None and port in pa.port_level_mtls and pa.port_level_mtls[port].mode != "UNSET":
        return pa.port_level_mtls[port].mode
    return pa.mtls.mode if pa.mtls else "PERMISSIVE"


@analyzer("security.mtls-conflict", "Clients do not send plaintext to STRICT servers", ("IST0113",))
def mtls_conflicts(ctx: Context) -> Iterator[Finding]:
    for dr in ctx.config.destination_rules:
        svc = ctx.service(dr.host, dr.namespace)
        if svc is None:
            continue
        policies: list[tuple[str, str, dict[str, str] | None]] = []
        if dr.traffic_policy and dr.traffic_policy.tls:
            policies.append(("spec.trafficPolicy.tls.mode", dr.traffic_policy.tls.mode, None))
        for i, s in enumerate(dr.subsets):
            if s.traffic_policy and s.traffic_policy.tls:
                policies.append((f"spec.subsets[{i}].trafficPolicy.tls.mode", s.traffic_policy.tls.mode, s.labels))
        for path, mode, labels in policies:
            if mode not in ("DISABLE", "SIMPLE"):
                continue
            versions = ctx.pods_matching(svc, labels or {})
            strict = [v for v in versions if mtls_mode(ctx.config, svc, v) == "STRICT"]
            if strict:
                pa = effective_peer_authentication(ctx.config, svc, strict[0])
                assert pa is not None
                yield finding(
                    "IST0113",
                    path=path,
                    dr=f"{dr.namespace}/{dr.name}",
                    mode=mode,
                    host=svc.name,
                    pa=f"PeerAuthentication {pa.namespace}/{pa.name}",
                    **at(dr),
                )

"""IST0113: a DestinationRule must not send plaintext to workloads that require STRICT mTLS."""

from __future__ import annotations

from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.workloads import Service, Version
from mesh.istio import effective_peer_authentication, mtls_mode


def _mode(ctx: Context, svc: Service, version: Version) -> str:
    return mtls_mode(ctx.config.peer_authentications, svc.namespace, svc.pod_labels(version))


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
            strict = [v for v in versions if _mode(ctx, svc, v) == "STRICT"]
            if strict:
                pa = effective_peer_authentication(
                    ctx.config.peer_authentications, svc.namespace, svc.pod_labels(strict[0])
                )
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

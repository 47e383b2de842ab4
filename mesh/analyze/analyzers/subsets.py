"""IST0173: every subset selects at least one workload."""

from __future__ import annotations

from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding


@analyzer("destinationrule.subsets", "Subset labels select running workloads", ("IST0173",))
def subsets_select_pods(ctx: Context) -> Iterator[Finding]:
    for dr in ctx.config.destination_rules:
        svc = ctx.service(dr.host, dr.namespace)
        if svc is None:
            continue
        for i, subset in enumerate(dr.subsets):
            if not [v for v in ctx.pods_matching(svc, subset.labels) if v.replicas > 0]:
                yield finding(
                    "IST0173",
                    path=f"spec.subsets[{i}].labels",
                    subset=repr(subset.name),
                    labels=subset.labels,
                    **at(dr),
                )

"""IST0101/IST0110/IST0111: each workload gets at most one Sidecar, and a Sidecar's selector finds workloads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.sidecar import Sidecar


@analyzer(
    "sidecar.selectors",
    "Sidecar selectors match workloads; one Sidecar per workload and one without selector per namespace",
    ("IST0101", "IST0110", "IST0111"),
)
def sidecar_selectors(ctx: Context) -> Iterator[Finding]:
    by_ns: dict[str, list[Sidecar]] = defaultdict(list)
    for sc in sorted(ctx.config.of_kind(Sidecar), key=lambda s: (s.namespace, s.name)):
        by_ns[sc.namespace].append(sc)
    for ns, sidecars in sorted(by_ns.items()):
        unselective = [s for s in sidecars if not (s.workload_selector and s.workload_selector.labels)]
        if len(unselective) > 1:
            names = ", ".join(s.name for s in unselective)
            for s in unselective:
                yield finding("IST0111", others=names, namespace=ns, **at(s))
        selective = [s for s in sidecars if s not in unselective]
        for s in selective:
            assert s.workload_selector is not None
            labels = s.workload_selector.labels
            if not ctx.selects_any(labels, ns):
                ref = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                yield finding("IST0101", path="spec.workloadSelector", what="selector", ref=ref, **at(s))
        yield from _shared_workloads(ctx, ns, selective)


def _shared_workloads(ctx: Context, ns: str, sidecars: list[Sidecar]) -> Iterator[Finding]:
    """One finding per Sidecar that shares a workload with others, naming the first such workload."""
    shared: dict[str, tuple[list[str], str]] = {}
    for w in (w for w in ctx.workloads if w.namespace == ns):
        selecting = [
            s for s in sidecars if s.workload_selector and s.workload_selector.labels.items() <= w.labels.items()
        ]
        if len(selecting) > 1:
            pod = ",".join(f"{k}={v}" for k, v in sorted(w.labels.items()))
            for s in selecting:
                shared.setdefault(s.name, ([o.name for o in selecting], pod))
    for s in sidecars:
        if s.name in shared:
            names, pod = shared[s.name]
            yield finding(
                "IST0110", path="spec.workloadSelector", others=", ".join(names), namespace=ns, workload=pod, **at(s)
            )

"""MSH0100/MSH0006/MSH0005: what the chosen target can run and honour; faults that never fire."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from mesh.analyze.context import Context, analyzer, at
from mesh.analyze.findings import Finding, finding
from mesh.api.networking import Delay
from mesh.istio import fires


def set_fields(obj: Any, generic: str = "", concrete: str = "") -> Iterator[tuple[str, str, Any]]:
    """(generic path, concrete path, value) of every field set: `VirtualService.http[].corsPolicy`, `spec.http[2].corsPolicy`."""
    if isinstance(obj, BaseModel):
        for name, field in type(obj).model_fields.items():
            value = getattr(obj, name)
            if value is None or value == [] or value == {}:
                continue
            alias = field.alias or name
            g, c = f"{generic}.{alias}" if generic else alias, f"{concrete}.{alias}" if concrete else alias
            yield g, c, value
            yield from set_fields(value, g, c)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from set_fields(v, f"{generic}[]", f"{concrete}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from set_fields(v, f"{generic}{{}}", f"{concrete}.{k}")


@analyzer("target.capabilities", "Every field set is honoured by the target", ("MSH0100",))
def unsupported_fields(ctx: Context) -> Iterator[Finding]:
    if ctx.target is None:
        return
    for r in ctx.config.resources:
        for generic, concrete, value in set_fields(r, r.kind, "spec"):
            why = ctx.target.unsupported.get(generic)
            check = ctx.target.unsupported_values.get(generic)
            if why is None and check is not None:
                why = check(value)
            if why is not None:
                yield finding("MSH0100", path=concrete, field=generic, target=ctx.target.name, why=why, **at(r))
    for svc in ctx.config.services:
        for generic, concrete, value in set_fields(svc, "Service", ""):
            check = ctx.target.unsupported_values.get(generic)
            why = check(value) if check else ctx.target.unsupported.get(generic)
            if why is not None:
                yield finding("MSH0100", path=concrete, field=generic, target=ctx.target.name, why=why, **at(svc))


@analyzer("target.workloads", "Every version has what the target needs to run it", ("MSH0006",))
def runnable(ctx: Context) -> Iterator[Finding]:
    if ctx.target is None or ctx.target.needs is None:
        return
    for svc in ctx.config.services:
        for i, v in enumerate(svc.versions):
            if v.replicas and not getattr(v, ctx.target.needs):
                yield finding(
                    "MSH0006",
                    path=f"versions[{i}].{ctx.target.needs}",
                    version=v.name,
                    service=svc.name,
                    what=ctx.target.needs,
                    target=ctx.target.name,
                    **at(svc),
                )


@analyzer("virtualservice.faults", "Faults can fire", ("MSH0005",))
def ineffective_faults(ctx: Context) -> Iterator[Finding]:
    """`mesh.istio.fires` decides, as translation does: a percentage of 0, or none at all, never fires."""
    for vs in ctx.config.virtual_services:
        for i, rule in enumerate(vs.http):
            f = rule.fault
            if f is None:
                continue
            for what, inj in (("delay", f.delay), ("abort", f.abort)):
                if inj is None or fires(inj):
                    continue
                if inj.percentage is not None or (isinstance(inj, Delay) and inj.percent is not None):
                    field = "percentage" if inj.percentage is not None else "percent"
                    yield finding(
                        "MSH0005",
                        path=f"spec.http[{i}].fault.{what}.{field}",
                        what=what,
                        why="its share is 0",
                        **at(vs),
                    )
                else:
                    why = "it has no percentage, and Istio then passes Envoy none: set percentage: {value: 100}"
                    yield finding("MSH0005", path=f"spec.http[{i}].fault.{what}", what=what, why=why, **at(vs))

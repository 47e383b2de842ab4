"""What a change does to the running policies: added, removed and changed objects, with a YAML diff of each."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import yaml

from mesh.api.config import MeshConfig


@dataclass(frozen=True)
class Change:
    op: str  # "+" added, "-" removed, "~" changed
    ref: str  # "VirtualService default/reviews"
    patch: str = ""  # unified diff of the manifest, for "~"

    def to_dict(self) -> dict[str, str]:
        return {"op": self.op, "ref": self.ref, "patch": self.patch}


def _yaml(obj: object) -> list[str]:
    return yaml.safe_dump(obj, sort_keys=False).splitlines(keepends=True)


def diff_configs(old: MeshConfig, new: MeshConfig) -> list[Change]:
    """Resource-level changes from `old` to `new`, sorted by kind, namespace and name (services compare too)."""
    before = {r.key: r for r in old.resources}
    after = {r.key: r for r in new.resources}
    out: list[Change] = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        ref = f"{key[0]} {key[1]}/{key[2]}"
        if a is None:
            out.append(Change("+", ref))
        elif b is None:
            out.append(Change("-", ref))
        else:
            ma, mb = a.to_manifest(), b.to_manifest()
            if ma != mb:
                patch = "".join(difflib.unified_diff(_yaml(ma), _yaml(mb), "running", "new", n=2))
                out.append(Change("~", ref, patch))
    svc_before = {s.fqdn: s.model_dump() for s in old.services}
    svc_after = {s.fqdn: s.model_dump() for s in new.services}
    for fqdn in sorted(svc_before.keys() | svc_after.keys()):
        if svc_before.get(fqdn) != svc_after.get(fqdn):
            op = "+" if fqdn not in svc_before else "-" if fqdn not in svc_after else "~"
            out.append(Change(op, f"Service {fqdn}"))
    return out

"""Derive `istio_crd_fields.json` from Istio's CRD bundle: per kind, every field path its `spec` schema allows.

Usage: python tests/unit/kubernetes/derive_istio_crd_fields.py CRD_ALL_YAML VERSION COMMIT > istio_crd_fields.json
where CRD_ALL_YAML is `manifests/charts/base/files/crd-all.gen.yaml` of istio/istio at tag VERSION (commit COMMIT).

Only the served `v1` versions are kept. Paths: `a.b` for objects, `a[]` for list items, `a{}` for map values; a schema that preserves unknown fields (e.g.
Struct) ends the walk and is recorded as `a.*`. Enums are kept per path so mode/action typos are caught too.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

GROUPS = ("networking.istio.io", "security.istio.io")
VERSION = "v1"  # the API version the compiler emits


def walk(schema: dict[str, Any], path: str, fields: dict[str, str], enums: dict[str, list[str]]) -> None:
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        fields[f"{path}.*"] = "any"
    kind = schema.get("type", "object")
    if path:
        fields[path] = kind
    if "enum" in schema:
        enums[path] = [str(v) for v in schema["enum"]]
    for name, sub in (schema.get("properties") or {}).items():
        walk(sub, f"{path}.{name}" if path else name, fields, enums)
    if kind == "array" and "items" in schema:
        walk(schema["items"], f"{path}[]", fields, enums)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        walk(extra, f"{path}{{}}", fields, enums)
    for alt in schema.get("oneOf", []) + schema.get("anyOf", []):
        if isinstance(alt, dict) and alt.get("properties"):
            walk({"type": kind, "properties": alt["properties"]}, path, fields, enums)


def derive(text: str) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for doc in yaml.safe_load_all(text):
        if not doc or doc.get("kind") != "CustomResourceDefinition" or doc["spec"]["group"] not in GROUPS:
            continue
        for version in doc["spec"]["versions"]:
            if not version.get("served") or version["name"] != VERSION:
                continue
            spec = version["schema"]["openAPIV3Schema"]["properties"].get("spec")
            if spec is None:
                continue
            fields: dict[str, str] = {}
            enums: dict[str, list[str]] = {}
            walk(spec, "", fields, enums)
            key = f"{doc['spec']['group']}/{version['name']}/{doc['spec']['names']['kind']}"
            kinds[key] = {"fields": dict(sorted(fields.items())), "enums": dict(sorted(enums.items()))}
    return dict(sorted(kinds.items()))


if __name__ == "__main__":
    crd_file, version, commit = sys.argv[1:4]
    with open(crd_file) as f:
        kinds = derive(f.read())
    source = f"istio/istio {version} (commit {commit}) manifests/charts/base/files/crd-all.gen.yaml"
    json.dump({"source": source, "istio_version": version, "kinds": kinds}, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")

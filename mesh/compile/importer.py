"""Istio/Kubernetes YAML -> typed objects, with errors that name the file, line, object and field."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mesh.api._base import Resource, SourceLocation
from mesh.api.config import MeshConfig
from mesh.api.networking import DestinationRule, Gateway, VirtualService
from mesh.api.security import AuthorizationPolicy, PeerAuthentication
from mesh.api.workloads import Service, ServicePort, Version
from mesh.errors import ImportFailed

ISTIO_KINDS: dict[tuple[str, str], type[Resource]] = {}
for _cls, _versions in (
    (Gateway, ("v1", "v1beta1", "v1alpha3")),
    (VirtualService, ("v1", "v1beta1", "v1alpha3")),
    (DestinationRule, ("v1", "v1beta1", "v1alpha3")),
    (PeerAuthentication, ("v1", "v1beta1")),
    (AuthorizationPolicy, ("v1", "v1beta1")),
):
    _group = _cls.api_version.split("/")[0]
    for _v in _versions:
        ISTIO_KINDS[(f"{_group}/{_v}", _cls.kind)] = _cls

WORKLOAD_KINDS = {("v1", "Service"), ("apps/v1", "Deployment"), ("v1", "ServiceAccount"), ("v1", "Namespace")}


class _Doc:
    def __init__(self, data: Any, node: yaml.Node, filename: str) -> None:
        self.data = data
        self.node = node
        self.filename = filename

    def line_of(self, path: tuple[str | int, ...]) -> int:
        """The line of the deepest node along `path` that exists (1-based)."""
        node = self.node
        for key in path:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                nxt = next((v for k, v in node.value if k.value == key), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                nxt = node.value[key]
            if nxt is None:
                break
            node = nxt
        if isinstance(node, yaml.MappingNode) and node.value:
            node = node.value[0][0]  # a document's mark sits on its `---`; its first key is where it starts
        return int(node.start_mark.line) + 1

    def where(self, path: tuple[str | int, ...] = ()) -> SourceLocation:
        return SourceLocation(file=self.filename, line=self.line_of(path))


def _documents(text: str, filename: str) -> Iterator[_Doc]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is None:
                continue
            if isinstance(data, dict) and data.get("kind") == "List" and isinstance(data.get("items"), list):
                items_node = next(v for k, v in node.value if k.value == "items")
                for item, item_node in zip(data["items"], items_node.value, strict=True):
                    yield _Doc(item, item_node, filename)
            else:
                yield _Doc(data, node, filename)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ImportFailed(f"{filename}{line}: not valid YAML: {getattr(e, 'problem', e)}") from None
    finally:
        loader.dispose()


def _path_text(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_error(doc: _Doc, what: str, err: ValidationError, prefix: tuple[str | int, ...]) -> ImportFailed:
    lines = []
    for e in err.errors()[:10]:
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        full = prefix + loc
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling against the Istio API reference)"
        lines.append(f"{doc.filename}:{doc.line_of(full)}: {what}: {_path_text(full) or '(spec)'}: {msg}")
    return ImportFailed("\n".join(lines), hint="fix the field named above; nothing was imported")


def _load_resource(doc: _Doc, cls: type[Resource], namespace: str) -> Resource:
    data = doc.data
    meta = data.get("metadata") or {}
    name = meta.get("name")
    ns = meta.get("namespace") or namespace
    what = f"{cls.kind} {ns}/{name}"
    if not name:
        raise ImportFailed(f"{doc.filename}:{doc.line_of(('metadata',))}: {cls.kind} has no metadata.name")
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise ImportFailed(f"{doc.filename}:{doc.line_of(())}: {what}: spec is missing or not a mapping")
    for reserved in ("name", "namespace", "labels", "annotations"):
        if reserved in spec:
            raise ImportFailed(
                f"{doc.filename}:{doc.line_of(('spec', reserved))}: {what}: spec.{reserved}: unknown field"
            )
    fields = {**spec, "name": name, "namespace": ns}
    if meta.get("labels"):
        fields["labels"] = meta["labels"]
    if meta.get("annotations"):
        fields["annotations"] = meta["annotations"]
    try:
        obj = cls.model_validate(fields)
    except ValidationError as e:
        raise _validation_error(doc, what, e, ("spec",)) from None
    return obj.located(doc.where())


def load_yaml(text: str, filename: str = "<stdin>", *, namespace: str = "default") -> MeshConfig:
    """Parse multi-document YAML into a MeshConfig. Nothing is returned unless everything parses."""
    config = MeshConfig()
    k8s: list[_Doc] = []
    for doc in _documents(text, filename):
        if not isinstance(doc.data, dict):
            raise ImportFailed(f"{filename}:{doc.line_of(())}: expected a mapping with apiVersion and kind")
        key = (str(doc.data.get("apiVersion")), str(doc.data.get("kind")))
        if key in ISTIO_KINDS:
            config.resources.append(_load_resource(doc, ISTIO_KINDS[key], namespace))
        elif key in WORKLOAD_KINDS:
            k8s.append(doc)
        else:
            supported = sorted({f"{k} ({a})" for a, k in ISTIO_KINDS} | {f"{k} ({a})" for a, k in WORKLOAD_KINDS})
            raise ImportFailed(
                f"{filename}:{doc.line_of(())}: unsupported kind {key[1]!r} with apiVersion {key[0]!r}",
                hint="supported: " + ", ".join(supported),
            )
    config.services.extend(_workloads(k8s, namespace))
    return config


def load_file(path: str | os.PathLike[str], *, namespace: str = "default") -> MeshConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ImportFailed(f"cannot read {p}: {e.strerror}") from None
    return load_yaml(text, str(p), namespace=namespace)


def _workloads(docs: list[_Doc], default_ns: str) -> list[Service]:
    """Kubernetes Services + Deployments (grouped by `app`, versions by `version`) -> typed Services."""
    services: dict[tuple[str, str], _Doc] = {}
    deployments: dict[tuple[str, str], list[_Doc]] = {}
    for doc in docs:
        meta = doc.data.get("metadata") or {}
        ns = meta.get("namespace") or default_ns
        if doc.data["kind"] == "Service":
            services[(ns, meta.get("name", ""))] = doc
        elif doc.data["kind"] == "Deployment":
            labels = (((doc.data.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
            app = labels.get("app")
            if not app:
                raise ImportFailed(
                    f"{doc.filename}:{doc.line_of(('spec', 'template', 'metadata', 'labels'))}: "
                    f"Deployment {ns}/{meta.get('name')}: pod template has no 'app' label",
                    hint="meshops groups Deployments into services by their 'app' label, as Istio does",
                )
            deployments.setdefault((ns, app), []).append(doc)
    out = []
    for (ns, name), sdoc in sorted(services.items()):
        deps = deployments.pop((ns, name), [])
        if not deps:
            raise ImportFailed(
                f"{sdoc.filename}:{sdoc.line_of(())}: Service {ns}/{name} has no Deployment with label app={name}"
            )
        ports = [
            ServicePort(
                number=p["port"],
                name=p.get("name", "http"),
                protocol=_app_protocol(p),
                target_port=p.get("targetPort") if isinstance(p.get("targetPort"), int) else None,
            )
            for p in (sdoc.data.get("spec") or {}).get("ports") or []
        ]
        versions, sa = [], None
        for d in deps:
            spec = d.data.get("spec") or {}
            tmpl = spec.get("template") or {}
            labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
            labels.pop("app", None)
            vname = labels.pop("version", None) or "v1"
            pod = tmpl.get("spec") or {}
            sa = pod.get("serviceAccountName") or sa
            containers = pod.get("containers") or [{}]
            env = {e["name"]: e["value"] for e in containers[0].get("env") or [] if "value" in e}
            versions.append(
                Version(
                    name=vname,
                    replicas=spec.get("replicas", 1),
                    labels=labels,
                    image=containers[0].get("image"),
                    env=env,
                )
            )
        try:
            out.append(
                Service(name=name, namespace=ns, ports=ports, service_account=sa, versions=versions).located(
                    sdoc.where()
                )
            )
        except ValidationError as e:
            raise ImportFailed(f"{sdoc.filename}:{sdoc.line_of(())}: Service {ns}/{name}: {e}") from None
    for (ns, app), deps in deployments.items():
        d = deps[0]
        raise ImportFailed(f"{d.filename}:{d.line_of(())}: Deployment for app={app} in {ns} has no Service")
    return out


def _app_protocol(port: dict[str, Any]) -> Any:
    proto = port.get("appProtocol") or (port.get("name") or "http").split("-")[0]
    return proto if proto in ("http", "http2", "grpc", "tcp", "tls", "https") else "tcp"

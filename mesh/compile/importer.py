"""Istio/Kubernetes YAML -> typed objects, with errors that name the file, line, object and field."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pydantic import ValidationError

from mesh.api._base import Resource
from mesh.api.config import MeshConfig
from mesh.api.edge import Edge
from mesh.api.envoyfilter import EnvoyFilter
from mesh.api.issuer import Issuer
from mesh.api.networking import DestinationRule, Gateway, VirtualService
from mesh.api.ratelimit import RateLimit
from mesh.api.registry import ServiceEntry, WorkloadEntry
from mesh.api.security import AuthorizationPolicy, PeerAuthentication, RequestAuthentication
from mesh.api.sidecar import Sidecar
from mesh.api.telemetry import Telemetry
from mesh.compile.workloads import WORKLOAD_KINDS, workloads
from mesh.compile.yamlsafe import Document, InputLimits, decode, documents, path_text, read_file
from mesh.errors import ImportFailed

ISTIO_KINDS: dict[tuple[str, str], type[Resource]] = {}
for _cls, _versions in (
    (Gateway, ("v1", "v1beta1", "v1alpha3")),
    (VirtualService, ("v1", "v1beta1", "v1alpha3")),
    (DestinationRule, ("v1", "v1beta1", "v1alpha3")),
    (PeerAuthentication, ("v1", "v1beta1")),
    (AuthorizationPolicy, ("v1", "v1beta1")),
    (ServiceEntry, ("v1", "v1beta1", "v1alpha3")),
    (WorkloadEntry, ("v1", "v1beta1", "v1alpha3")),
    (Sidecar, ("v1", "v1beta1", "v1alpha3")),
    (EnvoyFilter, ("v1alpha3",)),
    (RequestAuthentication, ("v1", "v1beta1")),
    (Telemetry, ("v1", "v1alpha1")),
    (Edge, ("v1alpha1",)),  # meshops' own kinds (meshops.dev/v1alpha1)
    (RateLimit, ("v1alpha1",)),
    (Issuer, ("v1alpha1",)),
):
    _group = _cls.api_version.split("/")[0]
    for _v in _versions:
        ISTIO_KINDS[(f"{_group}/{_v}", _cls.kind)] = _cls


def _documents(text: str, filename: str, limits: InputLimits) -> Iterator[Document]:
    count = 0
    for data, node in documents(text, filename, limits):
        if isinstance(data, dict) and data.get("kind") == "List" and isinstance(data.get("items"), list):
            items_node = next(v for k, v in node.value if k.value == "items")
            pairs = list(zip(data["items"], items_node.value, strict=True))
        else:
            pairs = [(data, node)]
        for item, item_node in pairs:
            count += 1
            if count > limits.max_objects:
                line = item_node.start_mark.line + 1
                raise limits.exceeded(filename, line, "max_objects", "the number of objects")
            yield Document(item, item_node, filename)


_METADATA_FIELDS = ("name", "namespace", "labels", "annotations")
_TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec", "status"}  # status is the server's, never ours to keep
# Written by the API server, not by people: reading them back from `kubectl get -o yaml` must not fail.
_SERVER_METADATA = {"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"}


def _validation_error(doc: Document, what: str, err: ValidationError, prefix: tuple[str | int, ...]) -> ImportFailed:
    lines = []
    for e in err.errors()[:10]:
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        full = (("metadata",) if loc and loc[0] in _METADATA_FIELDS else prefix) + loc
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling against the Istio API reference)"
        lines.append(f"{doc.filename}:{doc.line_of(full)}: {what}: {path_text(full) or '(spec)'}: {msg}")
    return ImportFailed("\n".join(lines), hint="fix the field named above; nothing was imported")


def _metadata(doc: Document, kind: str) -> dict[str, Any]:
    """The document's metadata as a mapping; anything else is an error at its line."""
    meta = doc.data.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ImportFailed(
            f"{doc.filename}:{doc.line_of(('metadata',))}: {kind}: metadata must be a mapping "
            f"(with name, namespace, labels), not a {type(meta).__name__}"
        )
    return meta


def _check_top_level(doc: Document, what: str) -> None:
    for key in doc.data:
        if key not in _TOP_LEVEL:
            raise ImportFailed(
                f"{doc.filename}:{doc.line_of((key,))}: {what}: unknown top-level field {key!r}",
                hint="a document has apiVersion, kind, metadata and spec; check the indentation and spelling",
            )
    for key in _metadata(doc, what):
        if key not in _METADATA_FIELDS and key not in _SERVER_METADATA:
            raise ImportFailed(
                f"{doc.filename}:{doc.line_of(('metadata', key))}: {what}: metadata.{key}: unknown field"
            )


def _load_resource(doc: Document, cls: type[Resource], namespace: str) -> Resource:
    data = doc.data
    meta = _metadata(doc, cls.kind)
    name = meta.get("name")
    ns = meta.get("namespace") or namespace
    what = f"{cls.kind} {ns}/{name}"
    if not name:
        raise ImportFailed(f"{doc.filename}:{doc.line_of(('metadata',))}: {cls.kind} has no metadata.name")
    _check_top_level(doc, what)
    spec = data.get("spec")
    if not isinstance(spec, dict):
        raise ImportFailed(f"{doc.filename}:{doc.line_of(())}: {what}: spec is missing or not a mapping")
    for reserved in _METADATA_FIELDS:
        if reserved in spec and reserved not in cls.spec_renames:
            raise ImportFailed(
                f"{doc.filename}:{doc.line_of(('spec', reserved))}: {what}: spec.{reserved}: unknown field"
            )
    spec = {cls.spec_renames.get(k, k): v for k, v in spec.items()}
    fields = {**spec, "name": name, "namespace": ns}
    for key in ("labels", "annotations"):
        if meta.get(key) is not None:
            fields[key] = meta[key]
    try:
        obj = cls.model_validate(fields)
    except ValidationError as e:
        raise _validation_error(doc, what, e, ("spec",)) from None
    return obj.located(doc.where())


@dataclass
class Observed:
    """What `istioctl analyze` reads from the cluster but meshops does not model as policy: Pods that belong to no
    Service of the input (a gateway's pods, say) and TLS Secrets (what a Gateway's credentialName names)."""

    pods: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (namespace, labels)
    secrets: set[str] = field(default_factory=set)


def load_yaml(
    text: str,
    filename: str = "<stdin>",
    *,
    namespace: str = "default",
    limits: InputLimits | None = None,
    observed: Observed | None = None,
) -> MeshConfig:
    """Parse multi-document YAML into a MeshConfig. Nothing is returned unless everything parses.

    With `observed` (analysis input), Secrets and Pods outside the input's Services are collected there instead
    of being refused."""
    limits = limits or InputLimits.from_env()
    config = MeshConfig()
    k8s: list[Document] = []
    for doc in _documents(text, filename, limits):
        if not isinstance(doc.data, dict):
            raise ImportFailed(f"{filename}:{doc.line_of(())}: expected a mapping with apiVersion and kind")
        key = (str(doc.data.get("apiVersion")), str(doc.data.get("kind")))
        if observed is not None and key == ("v1", "Secret"):
            observed.secrets.add(str((doc.data.get("metadata") or {}).get("name")))
        elif key in ISTIO_KINDS:
            config.resources.append(_load_resource(doc, ISTIO_KINDS[key], namespace))
        elif key in WORKLOAD_KINDS:
            k8s.append(doc)
        else:
            supported = sorted({f"{k} ({a})" for a, k in ISTIO_KINDS} | {f"{k} ({a})" for a, k in WORKLOAD_KINDS})
            raise ImportFailed(
                f"{filename}:{doc.line_of(())}: unsupported kind {key[1]!r} with apiVersion {key[0]!r}",
                hint="supported: " + ", ".join(supported),
            )
    if observed is not None:
        k8s = _observe_pods(k8s, namespace, observed)
    config.services.extend(workloads(k8s, namespace))
    return config


def _observe_pods(docs: list[Document], namespace: str, observed: Observed) -> list[Document]:
    """Every Pod is a workload for analysis; those whose `app` names no Service of the input leave the import."""

    def meta(d: Document) -> dict[str, Any]:
        m = d.data.get("metadata")
        return m if isinstance(m, dict) else {}

    services = {
        (meta(d).get("namespace") or namespace, meta(d).get("name")) for d in docs if d.data.get("kind") == "Service"
    }
    kept = []
    for d in docs:
        if d.data.get("kind") != "Pod":
            kept.append(d)
            continue
        labels = meta(d).get("labels") or {}
        ns = meta(d).get("namespace") or namespace
        observed.pods.append((ns, {str(k): str(v) for k, v in labels.items()}))
        if (ns, labels.get("app")) in services:
            kept.append(d)
    return kept


def load_stream(
    stream: BinaryIO, name: str = "<stdin>", *, namespace: str = "default", observed: Observed | None = None
) -> MeshConfig:
    """YAML from a byte stream (stdin): read no more than the size limit, decode strictly, then as load_yaml."""
    limits = InputLimits.from_env()
    text = decode(stream.read(limits.max_bytes + 1), name, limits)
    return load_yaml(text, name, namespace=namespace, limits=limits, observed=observed)


def load_file(
    path: str | os.PathLike[str],
    *,
    namespace: str = "default",
    limits: InputLimits | None = None,
    observed: Observed | None = None,
) -> MeshConfig:
    limits = limits or InputLimits.from_env()
    return load_yaml(read_file(path, limits), os.fspath(path), namespace=namespace, limits=limits, observed=observed)

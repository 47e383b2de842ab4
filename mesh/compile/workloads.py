"""Kubernetes workload YAML (Service, Deployment, Pod, ServiceAccount, Namespace) -> typed Services.

Nothing is dropped silently: a field meshops does not model (a container's `command`, `volumes`, `resources`,
an env var from a Secret, ...) is an error naming its file and line, so an import never changes what runs.
What `render` itself writes (the runtime env vars, the readiness probe) is recognised and not duplicated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

from pydantic import ValidationError

from mesh.api.workloads import Service, ServicePort, Version
from mesh.compile.render import readiness_probe, runtime_env
from mesh.compile.yamlsafe import Document, path_text
from mesh.errors import ImportFailed

WORKLOAD_KINDS = {
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Pod"),
    ("v1", "ServiceAccount"),
    ("v1", "Namespace"),
}

# The fields meshops models, per kind (None: any value). Everything else is reported, never dropped.
Shape = dict[str, Any] | list[Any] | None
_ANY = None
_SERVER = {k: _ANY for k in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")}
_META = {"name": _ANY, "namespace": _ANY, "labels": _ANY, **_SERVER}
_CONTAINER: Shape = {
    "name": _ANY,
    "image": _ANY,
    "imagePullPolicy": _ANY,
    "ports": [{"containerPort": _ANY, "name": _ANY, "protocol": _ANY}],
    "env": [{"name": _ANY, "value": _ANY, "valueFrom": _ANY}],
    "readinessProbe": _ANY,
}
_POD_SPEC: Shape = {"serviceAccountName": _ANY, "containers": [_CONTAINER]}
_TOP = {"apiVersion": _ANY, "kind": _ANY, "metadata": _META, "status": _ANY}
SHAPES: dict[str, Shape] = {
    "Service": {
        **_TOP,
        "spec": {
            "selector": _ANY,
            "type": _ANY,
            "clusterIP": _ANY,
            "ports": [{"name": _ANY, "port": _ANY, "targetPort": _ANY, "protocol": _ANY, "appProtocol": _ANY}],
        },
    },
    "Deployment": {
        **_TOP,
        "spec": {
            "replicas": _ANY,
            "selector": {"matchLabels": _ANY},
            "template": {"metadata": {"labels": _ANY}, "spec": _POD_SPEC},
        },
    },
    "StatefulSet": {
        **_TOP,
        "spec": {
            "serviceName": _ANY,
            "replicas": _ANY,
            "selector": {"matchLabels": _ANY},
            "template": {"metadata": {"labels": _ANY}, "spec": _POD_SPEC},
        },
    },
    "Pod": {**_TOP, "spec": _POD_SPEC},
    "ServiceAccount": _TOP,
    "Namespace": _TOP,
}
RUNTIME_ENV = {"SERVICE_NAME", "SERVICE_VERSION", "PORT", "POD_NAME"}


def _unmodelled(data: Any, shape: Shape, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if shape is None:
        return
    if isinstance(shape, list):
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield from _unmodelled(item, shape[0], (*path, i))
        return
    if isinstance(data, dict):
        for key, value in data.items():
            if key in shape:
                yield from _unmodelled(value, shape[key], (*path, key))
            else:
                yield (*path, key)


class _Reader:
    """Checks one workload document and reports its problems at their lines."""

    def __init__(self, doc: Document, default_ns: str) -> None:
        self.doc = doc
        self.kind = str(doc.data.get("kind"))
        meta = doc.data.get("metadata")
        if not isinstance(meta, dict):
            self.fail(("metadata",), "metadata must be a mapping with name (and namespace, labels)")
        self.meta: dict[str, Any] = meta
        self.name = self.text(("metadata", "name"), meta.get("name"), required=True)
        self.ns = self.text(("metadata", "namespace"), meta.get("namespace")) or default_ns
        self.ref = f"{self.kind} {self.ns}/{self.name}"
        missing = list(_unmodelled(doc.data, SHAPES[self.kind]))
        if missing:
            lines = [
                f"{doc.filename}:{doc.line_of(p)}: {self.ref}: {path_text(p)}: not modelled by meshops" for p in missing
            ]
            raise ImportFailed(
                "\n".join(lines[:10]),
                hint="importing it would silently change what runs; remove the field or keep this workload "
                "outside meshops",
            )

    def fail(self, path: tuple[str | int, ...], message: str, hint: str | None = None) -> NoReturn:
        ref = getattr(self, "ref", self.kind)
        raise ImportFailed(
            f"{self.doc.filename}:{self.doc.line_of(path)}: {ref}: {path_text(path)}: {message}", hint=hint
        )

    def text(self, path: tuple[str | int, ...], value: Any, *, required: bool = False) -> str | None:
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            self.fail(path, "must be a non-empty string")
        return str(value)

    def mapping(self, path: tuple[str | int, ...]) -> dict[str, Any]:
        value: Any = self.doc.data
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not a {type(value).__name__}")
        return value

    def labels(self, path: tuple[str | int, ...]) -> dict[str, str]:
        labels = self.mapping(path)
        for k, v in labels.items():
            if not isinstance(k, str) or not isinstance(v, str):
                self.fail((*path, k), "label keys and values must be strings")
        return labels


def workloads(docs: list[Document], default_ns: str) -> list[Service]:
    """Services + their Deployments (or Pods), grouped by the pods' `app` label as Istio does."""
    services: dict[tuple[str, str], _Reader] = {}
    pods: dict[tuple[str, str], list[_Reader]] = {}
    for doc in docs:
        r = _Reader(doc, default_ns)
        if r.kind == "Service":
            services[(r.ns, r.name or "")] = r
        elif r.kind in ("Deployment", "StatefulSet", "Pod"):
            base = _labels_path(r)
            app = r.labels(base).get("app")
            if not app:
                r.fail(base, "the pod has no 'app' label", "meshops groups pods into services by 'app', as Istio does")
            pods.setdefault((r.ns, app), []).append(r)
        elif r.kind == "ServiceAccount":
            extra = {k: v for k, v in r.labels(("metadata", "labels")).items() if k != "app"}
            if extra:
                r.fail(("metadata", "labels"), f"labels {sorted(extra)} are not modelled by meshops")
        elif r.kind == "Namespace":
            extra = {
                k: v for k, v in r.labels(("metadata", "labels")).items() if (k, v) != ("istio-injection", "enabled")
            }
            if extra:
                r.fail(("metadata", "labels"), f"labels {sorted(extra)} are not modelled by meshops")
    out = []
    for key, sr in sorted(services.items()):
        group = pods.pop(key, [])
        if not group:
            sr.fail((), f"has no Deployment, StatefulSet or Pod with label app={sr.name}")
        out.append(_service(sr, group))
    for (ns, app), group in pods.items():
        group[0].fail((), f"{group[0].kind} for app={app} in {ns} has no Service")
    return out


def _service(sr: _Reader, group: list[_Reader]) -> Service:
    spec = sr.mapping(("spec",))
    name = sr.name or ""
    selector = sr.labels(("spec", "selector"))
    if selector != {"app": name}:
        sr.fail(("spec", "selector"), f"meshops selects a service's pods by app={name} only, not {selector}")
    if spec.get("type", "ClusterIP") != "ClusterIP":
        sr.fail(("spec", "type"), f"type {spec.get('type')!r} is not modelled (only ClusterIP)")
    cluster_ip = spec.get("clusterIP")
    if cluster_ip not in (None, "None"):
        sr.fail(("spec", "clusterIP"), f"a fixed clusterIP {cluster_ip!r} is not modelled: omit it, or None (headless)")
    ports = [_port(sr, i, p) for i, p in enumerate(spec.get("ports") or [])]
    if not ports:
        sr.fail(("spec", "ports"), "a mesh service needs at least one port")
    labels = {k: v for k, v in sr.labels(("metadata", "labels")).items() if k != "app"}
    versions: dict[str, Version] = {}
    account: str | None = None
    for r in group:
        _check_kind(r, name, headless=cluster_ip == "None")
        version, sa = _version(r, name, ports)
        if sa and account and sa != account:
            r.fail((*_pod_path(r), "serviceAccountName"), f"differs from {account!r}: one identity per service")
        account = sa or account
        if version.name in versions:
            if r.kind != "Pod":
                r.fail(_labels_path(r), f"a second workload for version {version.name!r} of {name}")
            versions[version.name].replicas += 1
        else:
            versions[version.name] = version
    try:
        return Service(
            name=name,
            namespace=sr.ns,
            ports=ports,
            service_account=account,
            versions=list(versions.values()),
            labels=labels,
            headless=cluster_ip == "None",
        ).located(sr.doc.where())
    except ValidationError as e:
        first = e.errors()[0]
        sr.fail((), f"{path_text(tuple(first['loc']))}: {first['msg']}")


def _check_kind(r: _Reader, service: str, *, headless: bool) -> None:
    """meshops renders a headless service's versions as StatefulSets (stable pod names and DNS) and any other's as
    Deployments: anything else would not come back as it was read."""
    if r.kind == "StatefulSet":
        if not headless:
            r.fail((), f"a StatefulSet is modelled only for a headless Service: give {service} `clusterIP: None`")
        if r.mapping(("spec",)).get("serviceName") != service:
            r.fail(("spec", "serviceName"), f"must be its headless Service, {service!r}")
    elif r.kind == "Deployment" and headless:
        r.fail(
            (),
            f"the headless Service {service}'s pods are modelled as a StatefulSet's: make this a StatefulSet "
            f"with serviceName: {service}",
        )


def _port(sr: _Reader, i: int, p: Any) -> ServicePort:
    path: tuple[str | int, ...] = ("spec", "ports", i)
    if not isinstance(p, dict):
        sr.fail(path, "a port must be a mapping with at least `port`")
    if "port" not in p:
        sr.fail(path, "this port has no `port` number")
    if p.get("protocol", "TCP") != "TCP":
        sr.fail((*path, "protocol"), f"protocol {p.get('protocol')!r} is not modelled (only TCP)")
    target = p.get("targetPort")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
        sr.fail((*path, "targetPort"), "named target ports are not modelled: give the container port's number")
    try:  # Istio selects the protocol from appProtocol and the name (`mesh.istio.protocol`)
        return ServicePort.model_validate(
            {
                "number": p["port"],
                "name": p.get("name", "http"),
                "app_protocol": p.get("appProtocol"),
                "target_port": target,
            }
        )
    except ValidationError as e:
        first = e.errors()[0]
        field = {"number": "port", "target_port": "targetPort"}.get(str(first["loc"][0]), str(first["loc"][0]))
        sr.fail((*path, field), first["msg"])


_TEMPLATED = ("Deployment", "StatefulSet")  # workloads with a pod template (a Pod is its own)


def _pod_path(r: _Reader) -> tuple[str, ...]:
    return ("spec", "template", "spec") if r.kind in _TEMPLATED else ("spec",)


def _labels_path(r: _Reader) -> tuple[str, ...]:
    return ("spec", "template", "metadata", "labels") if r.kind in _TEMPLATED else ("metadata", "labels")


def _version(r: _Reader, service: str, ports: list[ServicePort]) -> tuple[Version, str | None]:
    pod_path = _pod_path(r)
    labels = dict(r.labels(_labels_path(r)))
    labels.pop("app", None)
    vname = labels.pop("version", None) or "v1"
    pod = r.mapping(pod_path)
    containers = pod.get("containers") or []
    if not isinstance(containers, list) or len(containers) != 1:
        r.fail((*pod_path, "containers"), "meshops models exactly one container per pod (the sidecar is added)")
    c = containers[0]
    cpath: tuple[str | int, ...] = (*pod_path, "containers", 0)
    if not isinstance(c, dict):
        r.fail(cpath, "a container must be a mapping")
    if c.get("name", service) != service:
        r.fail((*cpath, "name"), f"the container is named after its service ({service!r}) when rendered")
    if c.get("imagePullPolicy", "IfNotPresent") != "IfNotPresent":
        r.fail((*cpath, "imagePullPolicy"), "only IfNotPresent is modelled")
    targets = {p.target_port or p.number for p in ports}
    for i, cp in enumerate(c.get("ports") or []):
        if not isinstance(cp, dict) or cp.get("containerPort") not in targets:
            r.fail(
                (*cpath, "ports", i), f"container ports are derived from the Service's target ports {sorted(targets)}"
            )
    replicas = 1
    deployment = None
    if r.kind in _TEMPLATED:
        spec = r.mapping(("spec",))
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool):
            r.fail(("spec", "replicas"), "must be a whole number")
        pod_labels = {"app": service, "version": vname, **labels}
        for path in (("metadata", "labels"), ("spec", "selector", "matchLabels")):
            if not r.labels(path).items() <= pod_labels.items():
                r.fail(path, f"must be a subset of the pod's labels {pod_labels}")
        if r.name != f"{service}-{vname}":
            deployment = r.name
    probe = c.get("readinessProbe")
    try:
        version = Version(
            name=vname,
            replicas=replicas,
            labels=labels,
            image=c.get("image"),
            env=_env(r, cpath, c.get("env") or [], service, vname, ports),
            deployment=deployment,
        )
    except ValidationError as e:
        first = e.errors()[0]
        r.fail(_labels_path(r), f"{path_text(tuple(first['loc']))}: {first['msg']}")
    if probe is not None:
        expected = readiness_probe(Service(name=service, ports=ports, versions=[version]))
        if probe != expected:
            r.fail((*cpath, "readinessProbe"), "only the probe meshops renders itself is modelled")
    return version, r.text((*pod_path, "serviceAccountName"), pod.get("serviceAccountName"))


def _env(
    r: _Reader, cpath: tuple[str | int, ...], env: Any, service: str, version: str, ports: list[ServicePort]
) -> dict[str, str]:
    """The container's own variables: what `render` adds itself is recognised and left out."""
    if not isinstance(env, list):
        r.fail((*cpath, "env"), "must be a list of {name, value}")
    stub = Service(name=service, ports=ports, versions=[Version(name=version)])
    rendered = {e["name"]: e for e in runtime_env(stub, stub.versions[0])}
    out: dict[str, str] = {}
    for i, e in enumerate(env):
        path = (*cpath, "env", i)
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            r.fail(path, "an env entry needs a name")
        name = e["name"]
        if name in rendered:
            if e != rendered[name]:
                r.fail(path, f"{name} is set by meshops itself ({rendered[name]}); remove it")
            continue
        if "valueFrom" in e:
            r.fail((*path, "valueFrom"), f"env {name} from a Secret, ConfigMap or field is not modelled")
        value = e.get("value", "")
        if not isinstance(value, str):
            r.fail((*path, "value"), "env values are strings in Kubernetes: quote it")
        if name in out:
            r.fail(path, f"duplicate env var {name}")
        out[name] = value
    return out

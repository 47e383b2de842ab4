"""Typed objects -> Istio and Kubernetes manifests. Deterministic: same input, same bytes."""

from __future__ import annotations

import json
from typing import Any

import yaml

from mesh.api.config import MeshConfig
from mesh.api.ratelimit import RateLimit
from mesh.api.workloads import Service, Version
from mesh.istio.protocol import app_protocol_value

Manifest = dict[str, Any]
LOCAL_ONLY_KINDS = frozenset({"Edge", "Issuer"})  # docs/edge.md: the edge and ACME in a cluster

INJECTION_LABEL = {"istio-injection": "enabled"}

# Namespaces every cluster has from the start. A deployer labels them (server-side apply of the labels) but never
# creates or deletes them: Kubernetes refuses to delete them, and creating one fails with "already exists".
SYSTEM_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


def render_istio(config: MeshConfig) -> list[Manifest]:
    """The Istio resources, sorted by kind, namespace and name. `Edge` is the local target's only (docs/edge.md says
    why): it renders to nothing here; a `RateLimit` renders to an EnvoyFilter."""
    from mesh.compile.ratelimit import envoy_filter, route_filter

    out = []
    for r in config.sorted_resources():
        if isinstance(r, RateLimit):  # Istio has no such kind: the EnvoyFilter its users would write
            out.append(envoy_filter(r, config).to_manifest())
        elif r.kind not in LOCAL_ONLY_KINDS:
            out.append(r.to_manifest())
    if any(r.route_scoped for r in config.of_kind(RateLimit)):
        out.append(route_filter().to_manifest())  # the one gateway filter the routes' configs enable
    return out


def render_workloads(config: MeshConfig) -> list[Manifest]:
    """Namespaces (sidecar injection on), then per service: ServiceAccount, Service, one Deployment a version (a
    StatefulSet for a headless service).

    A Namespace manifest for one of SYSTEM_NAMESPACES only carries its labels (`kubectl apply` patches them in);
    the kubernetes target turns it into a patch, never a create."""
    out: list[Manifest] = []
    for ns in sorted({s.namespace for s in config.services}):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": dict(INJECTION_LABEL)},
            }
        )
    for svc in sorted(config.services, key=lambda s: (s.namespace, s.name)):
        out.extend(service_manifests(svc))
    return out


def render(config: MeshConfig, *, workloads: bool = True) -> list[Manifest]:
    return (render_workloads(config) if workloads else []) + render_istio(config)


def service_manifests(svc: Service) -> list[Manifest]:
    sa = svc.service_account or svc.name
    meta = {"namespace": svc.namespace, "labels": {"app": svc.name}}
    labels = dict(sorted({**svc.labels, "app": svc.name}.items()))
    manifests: list[Manifest] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, **meta}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": labels},
            "spec": {
                "selector": {"app": svc.name},
                **({"clusterIP": "None"} if svc.headless else {}),
                "ports": [
                    {
                        "name": p.name,
                        "port": p.number,
                        "targetPort": p.target_port or p.number,
                        "protocol": "TCP",
                        "appProtocol": app_protocol_value(p),
                    }
                    for p in svc.ports
                ],
            },
        },
    ]
    manifests.extend(deployment(svc, v, sa) for v in svc.versions)
    return manifests


WORKLOAD_KIND = {False: "Deployment", True: "StatefulSet"}  # by Service.headless


def deployment(svc: Service, version: Version, service_account: str) -> Manifest:
    labels = dict(sorted(svc.pod_labels(version).items()))
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(version.env.items())]
    env += runtime_env(svc, version)
    container: dict[str, Any] = {
        "name": svc.name,
        "image": version.image or "",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": p.target_port or p.number, "name": p.name} for p in svc.ports],
        "env": env,
        "readinessProbe": readiness_probe(svc),
    }
    # a headless service's pods get stable names (`<service>-<version>-<i>`, as the local mesh names them) and
    # DNS (`<pod>.<service>...`) only as a StatefulSet's, governed by that service
    stateful = {"serviceName": svc.name} if svc.headless else {}
    return {
        "apiVersion": "apps/v1",
        "kind": WORKLOAD_KIND[svc.headless],
        "metadata": {"name": svc.deployment_name(version), "namespace": svc.namespace, "labels": labels},
        "spec": {
            **stateful,
            "replicas": version.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"serviceAccountName": service_account, "containers": [container]},
            },
        },
    }


def runtime_env(svc: Service, version: Version) -> list[dict[str, Any]]:
    """The variables every rendered container gets (the sample app reads them); import strips them again."""
    return [
        {"name": "SERVICE_NAME", "value": svc.name},
        {"name": "SERVICE_VERSION", "value": version.name},
        {"name": "PORT", "value": str(svc.ports[0].target_port or svc.ports[0].number)},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def readiness_probe(svc: Service) -> dict[str, Any]:
    return {"tcpSocket": {"port": svc.ports[0].target_port or svc.ports[0].number}, "periodSeconds": 2}


def dump_yaml(manifests: list[Manifest]) -> str:
    return "---\n".join(yaml.safe_dump(m, sort_keys=False, default_flow_style=False, width=120) for m in manifests)


def dump_json(manifests: list[Manifest]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}, indent=2) + "\n"

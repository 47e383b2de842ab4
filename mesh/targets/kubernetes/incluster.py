"""What the stack can add to the cluster besides Istio and the workloads, as plain manifests (the program creates
them; the tests validate them against Kubernetes' schemas):

- the GitOps reconciler (`mesh reconcile --target kubernetes`) as a Deployment in its own namespace, outside the mesh,
  with a Service for its webhook and /metrics, a ServiceAccount, and RBAC: a ClusterRole on Istio's config kinds only
  (the reconciler lists meshops' objects across namespaces to prune), read and exec on pods in the managed
  namespaces (verification sends requests from inside them), and istiod's debug endpoints through the pod proxy
  (the propagation wait). Its webhook secret is a Secret made from a Pulumi secret.
- Istio's plug-in CA as the `cacerts` secret istiod reads at start.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import mesh
from mesh.errors import TargetError
from mesh.targets.kubernetes.cluster import ISTIO_KINDS, ISTIO_NAMESPACE
from mesh.targets.kubernetes.settings import (
    GATEWAY_NAMESPACE,
    RECONCILER_NAMESPACE,
    RECONCILER_PORT,
    ReconcilerSettings,
)

Manifest = dict[str, Any]
NAME = "meshops-reconciler"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "meshops"}
WEBHOOK_SECRET = "meshops-reconciler-webhook"
STATE_DIR = "/var/lib/meshops"
SECRET_DIR = "/etc/meshops/webhook"
INGRESS_URL = f"http://istio-ingressgateway.{GATEWAY_NAMESPACE}.svc.cluster.local"  # the gateway chart's Service
DOCKERFILE = Path(__file__).resolve().parent / "reconciler.Dockerfile"
RECONCILER_REPOSITORY = "meshops/reconciler"


def _meta(name: str, namespace: str | None = None) -> dict[str, Any]:
    return {"name": name, **({"namespace": namespace} if namespace else {}), "labels": dict(LABELS)}


def reconciler_args(r: ReconcilerSettings, env: str) -> list[str]:
    args = [
        "reconcile",
        "--target",
        "kubernetes",
        "--env",
        env,
        "--repo",
        r.repo,
        "--ref",
        r.ref,
        "--path",
        r.path,
        "--state-dir",
        STATE_DIR,
        "--poll",
        str(r.poll),
        "--listen",
        f"0.0.0.0:{RECONCILER_PORT}",
        "--webhook-secret-file",
        f"{SECRET_DIR}/secret",
    ]
    return args + (["--github-repo", r.github_repo] if r.github_repo else [])


def rbac(managed_namespaces: list[str]) -> list[Manifest]:
    """Istio's config kinds cluster-wide (nothing else at cluster scope), pods in the managed namespaces, istiod."""
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": RECONCILER_NAMESPACE}]
    istio_rules = [
        {
            "apiGroups": sorted({g for g, _, _ in ISTIO_KINDS.values()}),
            "resources": sorted(p for _, _, p in ISTIO_KINDS.values()),
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ]
    out: list[Manifest] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(NAME),
            "rules": istio_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(NAME),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": subject,
        },
    ]
    pod_rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},  # `kubectl exec deploy/x`
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
    ]
    istiod_rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
    ]
    rules_by_ns = {ns: list(pod_rules) for ns in sorted(set(managed_namespaces))}
    # one Role a namespace (names are unique there): istio-system may hold policies too
    rules_by_ns[ISTIO_NAMESPACE] = [*rules_by_ns.get(ISTIO_NAMESPACE, []), *istiod_rules]
    for ns, rules in rules_by_ns.items():
        out.append(
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(NAME, ns), "rules": rules}
        )
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": _meta(NAME, ns),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
                "subjects": subject,
            }
        )
    return out


def reconciler_manifests(r: ReconcilerSettings, env: str, image: str, managed_namespaces: list[str]) -> list[Manifest]:
    """Namespace (no sidecar: it talks to the API server and the ingress like any client outside the mesh),
    ServiceAccount, RBAC, Deployment, Service. The webhook Secret is `webhook_secret()`, made from a Pulumi secret."""
    selector = {"app.kubernetes.io/name": NAME}
    container = {
        "name": "reconciler",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": reconciler_args(r, env),
        "env": [{"name": "MESH_INGRESS_URL", "value": INGRESS_URL}],
        "ports": [{"name": "webhook", "containerPort": RECONCILER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": RECONCILER_PORT}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "allowPrivilegeEscalation": False},
        "volumeMounts": [
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "webhook-secret", "mountPath": SECRET_DIR, "readOnly": True},
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {**_meta(RECONCILER_NAMESPACE), "labels": {**LABELS, "istio-injection": "disabled"}},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, RECONCILER_NAMESPACE)},
        *rbac(managed_namespaces),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(NAME, RECONCILER_NAMESPACE),
            "spec": {
                "replicas": 1,  # one reconcile at a time per environment
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": {**LABELS}},
                    "spec": {
                        "serviceAccountName": NAME,
                        "containers": [container],
                        # the state (SQLite) lives as long as the pod: a new pod reconciles from git again
                        "volumes": [
                            {"name": "state", "emptyDir": {}},
                            {"name": "webhook-secret", "secret": {"secretName": WEBHOOK_SECRET}},
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(NAME, RECONCILER_NAMESPACE),
            "spec": {
                "selector": selector,
                "ports": [{"name": "webhook", "port": RECONCILER_PORT, "targetPort": RECONCILER_PORT}],
            },
        },
    ]


def webhook_secret(value: Any) -> Manifest:
    """`value` is the Pulumi secret Output in the program (a string in the schema tests)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(WEBHOOK_SECRET, RECONCILER_NAMESPACE),
        "type": "Opaque",
        "stringData": {"secret": value},
    }


def cacerts(files: dict[str, Any]) -> Manifest:
    """Istio's plug-in CA: the secret `cacerts` in istio-system (istiod reads it when it starts)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "cacerts",
            "namespace": ISTIO_NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "meshops"},
        },
        "type": "Opaque",
        "stringData": dict(files),
    }


def source_root() -> Path:
    """The meshops checkout the reconciler image is built from (an editable install, as in the workflows)."""
    root = Path(mesh.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists():
        raise TargetError(
            "the reconciler image is built from a meshops checkout, and this install has none",
            hint="set meshops:reconcilerImage to an image you built (mesh/targets/kubernetes/reconciler.Dockerfile)",
        )
    return root


def source_digest(root: Path) -> str:
    """The digest of what the image copies: a changed reconciler gets a new tag and the Deployment rolls."""
    h = hashlib.sha256()
    files = [root / "pyproject.toml", root / "README.md", DOCKERFILE, *sorted((root / "mesh").rglob("*.py"))]
    for p in files:
        h.update(str(p.relative_to(root) if p.is_relative_to(root) else p.name).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]

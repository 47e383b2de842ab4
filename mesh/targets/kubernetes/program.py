"""The Pulumi program: kind cluster -> Istio (base -> istiod -> gateway) -> workloads -> policies.

Everything Kubernetes sees comes from the same compiler as the local target (`render_workloads`,
`render_istio`), after the same analysis; errors stop the deployment before anything is created.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from mesh import analyze as analysis
from mesh.compile import build_policies, dump_yaml, render_istio, render_workloads
from mesh.targets import capabilities
from mesh.targets.kubernetes.settings import (
    GATEWAY_NAMESPACE,
    ISTIO_CHARTS,
    ISTIO_NAMESPACE,
    NAMESPACE,
    StackSettings,
    base_values,
    dump,
    gateway_values,
    istiod_values,
    kind_config,
    kind_create_command,
    kind_delete_command,
)

ROOT = Path(__file__).resolve().parents[3]
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshops"}

_CORE = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
}


@dataclass
class Deployed:
    """What the program created, and each resource's explicit dependencies (asserted by the mock tests)."""

    resources: dict[str, pulumi.Resource] = field(default_factory=dict)
    depends: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, resource: pulumi.Resource, deps: Sequence[str]) -> pulumi.Resource:
        self.resources[name] = resource
        self.depends[name] = list(deps)
        return resource

    def opts(
        self, deps: Sequence[str], provider: pulumi.ProviderResource | None = None, **kw: Any
    ) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(depends_on=[self.resources[d] for d in deps], provider=provider, **kw)


def _sample_app_digest() -> str:
    h = hashlib.sha256()
    for p in [*sorted((ROOT / "mesh" / "sampleapp").glob("*.py")), ROOT / "Dockerfile"]:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def policy_revision(rendered: str) -> str:
    """The git commit the policies came from (when in a repository) and the digest of what was rendered."""
    digest = hashlib.sha256(rendered.encode()).hexdigest()[:16]
    try:
        import git

        sha = git.Repo(ROOT, search_parent_directories=True).head.commit.hexsha[:12]
    except Exception:
        sha = "no-git"
    return f"{sha} (manifests sha256:{digest})"


def program(settings: StackSettings | None = None, policies_dir: Path | None = None) -> Deployed:
    s = settings or StackSettings.from_mapping(pulumi.Config(NAMESPACE).get)
    config = build_policies(s.policy_env, policies_dir or ROOT / "policies")
    analysis.check(config, capabilities("kubernetes"))
    out = Deployed()

    # --- cluster ---------------------------------------------------------------------------------
    if s.creates_cluster:
        cluster = command.local.Command(
            "kind-cluster",
            create=kind_create_command(s),
            delete=kind_delete_command(s),
            stdin=dump(kind_config(s)),
            triggers=[dump(kind_config(s))],
        )
        out.add("kind-cluster", cluster, [])
        kubeconfig_cmd = command.local.Command(
            "kind-kubeconfig",
            create=f"kind get kubeconfig --name {s.cluster_name}",
            opts=out.opts(["kind-cluster"], additional_secret_outputs=["stdout"]),
        )
        out.add("kind-kubeconfig", kubeconfig_cmd, ["kind-cluster"])
        kubeconfig: pulumi.Output[str] = pulumi.Output.secret(kubeconfig_cmd.stdout)
        image = command.local.Command(
            "sample-image",
            create=f"docker build -t {s.sample_image} {ROOT} && kind load docker-image {s.sample_image} --name {s.cluster_name}",
            triggers=[_sample_app_digest(), s.sample_image],
            opts=out.opts(["kind-cluster"]),
        )
        out.add("sample-image", image, ["kind-cluster"])
        cluster_deps = ["kind-kubeconfig"]
        image_deps = ["sample-image"]
    else:
        kubeconfig = pulumi.Output.secret(s.kubeconfig or "")
        cluster_deps, image_deps = [], []

    provider = k8s.Provider("kubernetes", kubeconfig=kubeconfig, opts=out.opts(cluster_deps))
    out.add("provider", provider, cluster_deps)

    # --- Istio from its official charts, in order ------------------------------------------------
    def release(name: str, chart: str, namespace: str, values: dict[str, Any], deps: list[str]) -> None:
        r = k8s.helm.v3.Release(
            name,
            name=name,
            chart=chart,
            version=s.istio_version,
            namespace=namespace,
            create_namespace=True,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=ISTIO_CHARTS),
            values=values,
            atomic=True,
            wait_for_jobs=True,
            timeout=600,
            opts=out.opts(deps, provider),
        )
        out.add(name, r, deps)

    release("istio-base", "base", ISTIO_NAMESPACE, base_values(s), [])
    release("istiod", "istiod", ISTIO_NAMESPACE, istiod_values(s), ["istio-base"])
    release("istio-ingressgateway", "gateway", GATEWAY_NAMESPACE, gateway_values(s), ["istiod"])

    # --- workloads: Namespaces (injection on), ServiceAccounts, Services, Deployments -----------------
    ns_names: dict[str, str] = {}
    for m in render_workloads(config):
        meta = dict(m["metadata"])
        meta["labels"] = {**meta.get("labels", {}), **MANAGED_BY}
        kind = m["kind"]
        ns = meta.get("namespace", "")
        name = f"{kind.lower()}-{ns + '-' if ns else ''}{meta['name']}"
        deps = ["istiod"] + ([ns_names[ns]] if ns in ns_names else []) + (image_deps if kind == "Deployment" else [])
        cls = _CORE[(m["apiVersion"], kind)]
        kwargs: dict[str, Any] = {"metadata": meta}
        if "spec" in m:
            kwargs["spec"] = m["spec"]
        out.add(name, cls(name, **kwargs, opts=out.opts(deps, provider)), deps)
        if kind == "Namespace":
            ns_names[meta["name"]] = name

    if s.legacy_client:
        # a client outside the mesh (no sidecar): the e2e suite's plaintext caller
        legacy_ns = k8s.core.v1.Namespace(
            "namespace-legacy",
            metadata={"name": "legacy", "labels": {"istio-injection": "disabled", **MANAGED_BY}},
            opts=out.opts(["istiod"], provider),
        )
        out.add("namespace-legacy", legacy_ns, ["istiod"])
        labels = {"app": "legacy-client"}
        container = {
            "name": "client",
            "image": s.sample_image,
            "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "SERVICE_NAME", "value": "legacy-client"}],
        }
        legacy_spec: Any = {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        }
        legacy_meta: Any = {"name": "legacy-client", "namespace": "legacy", "labels": {**labels, **MANAGED_BY}}
        dep = k8s.apps.v1.Deployment(
            "deployment-legacy-client",
            metadata=legacy_meta,
            spec=legacy_spec,
            opts=out.opts(["namespace-legacy", *image_deps], provider),
        )
        out.add("deployment-legacy-client", dep, ["namespace-legacy", *image_deps])

    # --- policies, from the same compiler ------------------------------------------------------------
    for m in render_istio(config):
        meta = dict(m["metadata"])
        meta["labels"] = {**meta.get("labels", {}), **MANAGED_BY}
        name = f"{m['kind'].lower()}-{meta['namespace']}-{meta['name']}"
        deps = ["istiod"] + ([ns_names[meta["namespace"]]] if meta["namespace"] in ns_names else [])
        cr = k8s.apiextensions.CustomResource(
            name,
            api_version=m["apiVersion"],
            kind=m["kind"],
            metadata=meta,
            spec=m["spec"],
            opts=out.opts(deps, provider),
        )
        out.add(name, cr, deps)

    pulumi.export("ingress_url", s.ingress_url)
    pulumi.export("kubeconfig", kubeconfig)
    pulumi.export("policy_env", s.policy_env)
    pulumi.export("policy_revision", policy_revision(dump_yaml(render_istio(config))))
    pulumi.export("istio_version", s.istio_version)
    return out

"""The Pulumi program: kind cluster -> Istio (base -> cacerts -> istiod -> gateway) -> add-ons -> workloads -> policies
-> the reconciler, one function per step.

Everything Kubernetes sees comes from the same compiler as the local target (`render_workloads`,
`render_istio`), after the same analysis; errors stop the deployment before anything is created.
Every resource names its provider and its dependencies in its ResourceOptions; the mock tests read both from
what the engine receives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_kubernetes as k8s

from mesh import analyze as analysis
from mesh.api.config import MeshConfig
from mesh.compile import build_policies, dump_yaml, render_istio, render_workloads
from mesh.compile.policies import DEFAULT_POLICIES
from mesh.compile.render import SYSTEM_NAMESPACES, Manifest
from mesh.targets import capabilities
from mesh.targets.kubernetes import image, incluster
from mesh.targets.kubernetes.settings import (
    ADDONS_URL,
    GATEWAY_NAMESPACE,
    ISTIO_CHARTS,
    ISTIO_NAMESPACE,
    NAMESPACE,
    SAMPLE_REPOSITORY,
    StackSettings,
    base_values,
    dump,
    gateway_values,
    istiod_values,
    kind_config,
    kind_create_command,
    kind_delete_command,
    state_home,
)

MANAGED_BY = {"app.kubernetes.io/managed-by": "meshops"}
# Namespaces that exist before our workloads do: Kubernetes' own, and those the Istio charts create.
EXISTING_NAMESPACES = SYSTEM_NAMESPACES | {ISTIO_NAMESPACE, GATEWAY_NAMESPACE}

_CORE = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "Service"): k8s.core.v1.Service,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
}
# the top-level fields of each kind besides apiVersion/kind/metadata, as the SDK's keyword arguments
_FIELDS = {"spec": "spec", "rules": "rules", "roleRef": "role_ref", "subjects": "subjects", "type": "type"}


@dataclass
class Deployed:
    """What the program created, by logical name (the tests look resources up here; they assert on what the
    engine received)."""

    resources: dict[str, pulumi.Resource] = field(default_factory=dict)

    def add(self, name: str, resource: pulumi.Resource) -> pulumi.Resource:
        if name in self.resources:
            raise ValueError(f"two resources named {name!r}: Pulumi would refuse the duplicate URN")
        self.resources[name] = resource
        return resource

    def opts(
        self, deps: Sequence[str], provider: pulumi.ProviderResource | None = None, **kw: Any
    ) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(depends_on=[self.resources[d] for d in deps], provider=provider, **kw)


def policy_revision(rendered: str, policies: Path) -> str:
    """The git commit the policies came from (when in a repository) and the digest of what was rendered."""
    digest = hashlib.sha256(rendered.encode()).hexdigest()[:16]
    try:
        import git

        sha = git.Repo(policies, search_parent_directories=True).head.commit.hexsha[:12]
    except Exception:
        sha = "no-git"
    return f"{sha} (manifests sha256:{digest})"


POD_TEMPLATES = ("Deployment", "StatefulSet")  # the workloads whose pods run the sample image


def _with_image(m: Manifest, old: str, new: str) -> Manifest:
    """The Deployment (or StatefulSet) with every container that runs `old` running `new` (the digest-tagged
    build)."""
    if m["kind"] not in POD_TEMPLATES:
        return m
    pod = m["spec"]["template"]["spec"]
    containers = [{**c, "image": new} if c.get("image") == old else c for c in pod["containers"]]
    return {
        **m,
        "spec": {**m["spec"], "template": {**m["spec"]["template"], "spec": {**pod, "containers": containers}}},
    }


def program(
    settings: StackSettings | None = None,
    policies_dir: Path | str | None = None,
    home: Path | None = None,
) -> Deployed:
    """cluster -> provider -> Istio's charts (with the plug-in CA) -> add-ons -> workloads -> policies -> the
    reconciler; each step names the resources it waits for."""
    s = settings or StackSettings.from_mapping(pulumi.Config(NAMESPACE).get)
    policies = Path(policies_dir or DEFAULT_POLICIES).resolve()
    config = build_policies(s.policy_env, policies)
    analysis.check(config, capabilities("kubernetes"))
    home = home or state_home()
    out = Deployed()

    cluster = _cluster(out, s, home)
    provider = k8s.Provider("kubernetes", kubeconfig=cluster.kubeconfig, opts=out.opts(cluster.provider_deps))
    out.add("provider", provider)
    _istio(out, s, provider)
    _addons(out, s, provider)
    namespaces = _workloads(out, s, provider, config, cluster)
    if s.legacy_client:
        _legacy_client(out, provider, cluster.sample_tag, cluster.image_deps)
    istio = render_istio(config)
    _policies(out, provider, istio, namespaces)
    if s.reconciler:
        managed = sorted({m["metadata"]["namespace"] for m in istio} | set(namespaces) | {"default"})
        _reconciler(out, provider, s, home, managed + (["legacy"] if s.legacy_client else []))

    pulumi.export("ingress_url", s.ingress_url)
    pulumi.export("kubeconfig", cluster.kubeconfig)
    pulumi.export("policy_env", s.policy_env)
    pulumi.export("policy_revision", policy_revision(dump_yaml(istio), policies))
    pulumi.export("istio_version", s.istio_version)
    pulumi.export("sample_image", cluster.sample_tag)
    return out


@dataclass(frozen=True)
class Cluster:
    """What the later steps need of the cluster: how to reach it, and what to wait for before using it."""

    kubeconfig: pulumi.Output[str]  # secret
    sample_tag: str  # the sample app's image as the cluster knows it
    provider_deps: list[str] = field(default_factory=list)
    image_deps: list[str] = field(default_factory=list)  # Deployments start once their image is in the cluster


def _cluster(out: Deployed, s: StackSettings, home: Path) -> Cluster:
    """A kind cluster with the sample image loaded into it, or the existing cluster the stack names."""
    if not s.creates_cluster:
        return Cluster(kubeconfig=pulumi.Output.secret(s.kubeconfig or ""), sample_tag=s.sample_image)
    kind_kubeconfig = home / "kind" / f"{s.cluster_name}.kubeconfig"
    kind_kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    cluster = command.local.Command(
        "kind-cluster",
        create=kind_create_command(s, kind_kubeconfig),
        delete=kind_delete_command(s, kind_kubeconfig),
        stdin=dump(kind_config(s)),
        triggers=[dump(kind_config(s))],
        # `kind create cluster --name X` fails while X exists: the old cluster goes first
        opts=pulumi.ResourceOptions(delete_before_replace=True),
    )
    out.add("kind-cluster", cluster)
    kubeconfig_cmd = command.local.Command(
        "kind-kubeconfig",
        create=f"kind get kubeconfig --name {quote(s.cluster_name)}",
        triggers=[cluster.id],  # a recreated cluster has new certificates: read its kubeconfig again
        opts=out.opts(["kind-cluster"], additional_secret_outputs=["stdout"]),
    )
    out.add("kind-kubeconfig", kubeconfig_cmd)
    built = image.prepare(SAMPLE_REPOSITORY, home / "build")
    out.add(
        "sample-image",
        command.local.Command(
            "sample-image",
            create=(
                f"docker build -t {quote(built.tag)} {quote(str(built.context))}"
                f" && kind load docker-image {quote(built.tag)} --name {quote(s.cluster_name)}"
            ),
            triggers=[built.digest, cluster.id],
            opts=out.opts(["kind-cluster"]),
        ),
    )
    return Cluster(
        kubeconfig=pulumi.Output.secret(kubeconfig_cmd.stdout),
        sample_tag=built.tag,
        provider_deps=["kind-kubeconfig"],
        image_deps=["sample-image"],
    )


def _istio(out: Deployed, s: StackSettings, provider: pulumi.ProviderResource) -> None:
    """Istio from its official charts, in order: base, the plug-in CA (when given), istiod, the ingress gateway."""

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
        out.add(name, r)

    release("istio-base", "base", ISTIO_NAMESPACE, base_values(s), [])
    release("istiod", "istiod", ISTIO_NAMESPACE, istiod_values(s), ["istio-base", *_cacerts(out, s, provider)])
    release("istio-ingressgateway", "gateway", GATEWAY_NAMESPACE, gateway_values(s), ["istiod"])


def _cacerts(out: Deployed, s: StackSettings, provider: pulumi.ProviderResource) -> list[str]:
    """Istio's `cacerts` secret when the stack plugs in a CA: istiod reads it when it starts, so it exists first
    (istio-base made the namespace). Returns what istiod waits for."""
    if not s.ca_certs:
        return []
    ca = {k: pulumi.Output.secret(v) for k, v in s.ca_certs.items()}
    _manifest(out, "secret-istio-system-cacerts", incluster.cacerts(ca), ["istio-base"], provider)
    return ["secret-istio-system-cacerts"]


def _addons(out: Deployed, s: StackSettings, provider: pulumi.ProviderResource) -> None:
    """Istio's add-ons, as Istio ships them for this version."""
    for addon in s.addons:
        url = ADDONS_URL.format(version=s.istio_version, addon=addon)
        out.add(
            f"addon-{addon}", k8s.yaml.v2.ConfigFile(f"addon-{addon}", file=url, opts=out.opts(["istiod"], provider))
        )


def _workloads(
    out: Deployed, s: StackSettings, provider: pulumi.ProviderResource, config: MeshConfig, cluster: Cluster
) -> dict[str, str]:
    """Namespaces (injection on), ServiceAccounts, Services, Deployments. Returns namespace -> the resource that
    makes or labels it (what the resources in it wait for)."""
    ns_names: dict[str, str] = {}
    for m in render_workloads(config):
        m = _with_image(m, s.sample_image, cluster.sample_tag) if s.creates_cluster else m
        meta = dict(m["metadata"])
        meta["labels"] = {**meta.get("labels", {}), **MANAGED_BY}
        kind = m["kind"]
        ns = meta.get("namespace", "")
        name = f"{kind.lower()}-{ns + '-' if ns else ''}{meta['name']}"
        image_deps = cluster.image_deps if kind in POD_TEMPLATES else []
        deps = ["istiod"] + ([ns_names[ns]] if ns in ns_names else []) + image_deps
        if kind == "Namespace" and meta["name"] in EXISTING_NAMESPACES:
            # label it (server-side apply of our labels only); never create or delete it
            name = f"namespace-labels-{meta['name']}"
            labels_only: Any = {"name": meta["name"], "labels": meta["labels"]}
            patch = k8s.core.v1.NamespacePatch(name, metadata=labels_only, opts=out.opts(deps, provider))
            out.add(name, patch)
            ns_names[meta["name"]] = name
            continue
        cls = _CORE[(m["apiVersion"], kind)]
        kwargs: dict[str, Any] = {"metadata": meta}
        if "spec" in m:
            kwargs["spec"] = m["spec"]
        out.add(name, cls(name, **kwargs, opts=out.opts(deps, provider)))
        if kind == "Namespace":
            ns_names[meta["name"]] = name
    return ns_names


def _policies(
    out: Deployed, provider: pulumi.ProviderResource, istio: Sequence[Manifest], namespaces: dict[str, str]
) -> None:
    """The Istio resources, from the same compiler as the local target, after istiod and their namespace."""
    for m in istio:
        meta = dict(m["metadata"])
        meta["labels"] = {**meta.get("labels", {}), **MANAGED_BY}
        name = f"{m['kind'].lower()}-{meta['namespace']}-{meta['name']}"
        deps = ["istiod"] + ([namespaces[meta["namespace"]]] if meta["namespace"] in namespaces else [])
        cr = k8s.apiextensions.CustomResource(
            name,
            api_version=m["apiVersion"],
            kind=m["kind"],
            metadata=meta,
            spec=m["spec"],
            opts=out.opts(deps, provider),
        )
        out.add(name, cr)


def _manifest(
    out: Deployed, name: str, m: Manifest, deps: list[str], provider: pulumi.ProviderResource
) -> pulumi.Resource:
    """One plain manifest as its typed SDK resource (Secrets' stringData may hold Pulumi secrets)."""
    cls = _CORE[(m["apiVersion"], m["kind"])]
    kwargs: dict[str, Any] = {_FIELDS[k]: v for k, v in m.items() if k in _FIELDS}
    if "stringData" in m:
        kwargs["string_data"] = m["stringData"]
    return out.add(name, cls(name, metadata=m["metadata"], **kwargs, opts=out.opts(deps, provider)))


def _reconciler(
    out: Deployed, provider: pulumi.ProviderResource, s: StackSettings, home: Path, managed: list[str]
) -> None:
    """`mesh reconcile --target kubernetes` in the cluster, after the policies it starts from (see incluster.py)."""
    assert s.reconciler is not None
    r = s.reconciler
    deps = ["istiod"]
    tag = r.image
    if tag is None:
        if not s.creates_cluster:
            raise ValueError(
                f"stack setting {NAMESPACE}:reconcilerImage is required on an existing cluster "
                "(build mesh/targets/kubernetes/reconciler.Dockerfile and push it to a registry the cluster pulls from)"
            )
        root = incluster.source_root()
        tag = f"{incluster.RECONCILER_REPOSITORY}:{incluster.source_digest(root)}"
        out.add(
            "reconciler-image",
            command.local.Command(
                "reconciler-image",
                create=(
                    f"docker build -f {quote(str(incluster.DOCKERFILE))} -t {quote(tag)} {quote(str(root))}"
                    f" && kind load docker-image {quote(tag)} --name {quote(s.cluster_name)}"
                ),
                triggers=[tag, out.resources["kind-cluster"].id],  # type: ignore[attr-defined]
                opts=out.opts(["kind-cluster"]),
            ),
        )
        deps.append("reconciler-image")
    policies = [n for n in out.resources if n.split("-", 1)[0] in _POLICY_KINDS]
    for m in incluster.reconciler_manifests(r, s.policy_env, tag, managed):
        ns = m["metadata"].get("namespace")
        name = f"{m['kind'].lower()}-{ns + '-' if ns else ''}{m['metadata']['name']}"
        own = [] if m["kind"] == "Namespace" else ["namespace-meshops-system"]
        # the Deployment starts once the policies it reconciles from and its webhook secret exist
        after = [*policies, "secret-meshops-system-webhook"] if m["kind"] == "Deployment" else []
        _manifest(out, name, m, [*deps, *own, *after], provider)
        if m["kind"] == "Namespace":
            secret = incluster.webhook_secret(pulumi.Output.secret(r.webhook_secret))
            _manifest(out, "secret-meshops-system-webhook", secret, ["namespace-meshops-system"], provider)


_POLICY_KINDS = {"gateway", "virtualservice", "destinationrule", "peerauthentication", "authorizationpolicy"}


def _legacy_client(out: Deployed, provider: pulumi.ProviderResource, image_tag: str, image_deps: list[str]) -> None:
    """A client outside the mesh (no sidecar): the e2e suite's plaintext caller."""
    out.add(
        "namespace-legacy",
        k8s.core.v1.Namespace(
            "namespace-legacy",
            metadata={"name": "legacy", "labels": {"istio-injection": "disabled", **MANAGED_BY}},
            opts=out.opts(["istiod"], provider),
        ),
    )
    labels = {"app": "legacy-client"}
    container = {
        "name": "client",
        "image": image_tag,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "SERVICE_NAME", "value": "legacy-client"}],
    }
    spec: Any = {
        "replicas": 1,
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
    }
    meta: Any = {"name": "legacy-client", "namespace": "legacy", "labels": {**labels, **MANAGED_BY}}
    out.add(
        "deployment-legacy-client",
        k8s.apps.v1.Deployment(
            "deployment-legacy-client",
            metadata=meta,
            spec=spec,
            opts=out.opts(["istiod", "namespace-legacy", *image_deps], provider),
        ),
    )

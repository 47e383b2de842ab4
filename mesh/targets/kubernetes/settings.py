"""Typed stack settings (`stacks/Pulumi.<stack>.yaml`, shipped with the package), and the pure pieces of the
program: kind config, Helm values, the pinned versions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any

import yaml

ISTIO_CHARTS = "https://istio-release.storage.googleapis.com/charts"
ISTIO_VERSION = "1.30.3"  # a published tag of istio/istio; the stacks pin it and the CRD field list is derived from it
KIND_VERSION = "v0.31.0"  # the workflows install this kind; its default node image is KIND_NODE_IMAGE
# Istio 1.30 needs Kubernetes >= 1.32 (istioctl's MinK8SVersion = 32); pinned by digest, as kind's release notes advise
KIND_NODE_IMAGE = "kindest/node:v1.35.0@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f"
SAMPLE_REPOSITORY = "meshops/sampleapp"  # built and `kind load`ed, tagged by the digest of its build context
INGRESS_NODE_PORT = 30080
ISTIO_NAMESPACE = "istio-system"
GATEWAY_NAMESPACE = "istio-ingress"
NAMESPACE = "meshops"  # Pulumi config namespace


STACKS = Path(__file__).resolve().parent / "stacks"  # shipped with the package


def stacks_dir() -> Path:
    """The stack files: MESH_STACKS_DIR when set (your own environments), else the ones shipped with meshops."""
    return Path(os.environ["MESH_STACKS_DIR"]).expanduser() if os.environ.get("MESH_STACKS_DIR") else STACKS


def state_home() -> Path:
    """Local state of the kubernetes target (file backend, Pulumi workspace, kind kubeconfigs, image contexts):
    MESH_PULUMI_HOME, default ~/.pulumi-meshops. Never inside the source tree, so a run changes no tracked file."""
    return Path(os.environ.get("MESH_PULUMI_HOME") or Path.home() / ".pulumi-meshops").expanduser()


@dataclass(frozen=True)
class StackSettings:
    cluster_name: str
    policy_env: str
    istio_version: str
    ingress_host_port: int = 8080
    ephemeral: bool = False  # only ephemeral stacks (dev, ci) may create a kind cluster on this machine
    node_image: str = KIND_NODE_IMAGE
    kubeconfig: str | None = None  # an existing cluster's kubeconfig (the text, kept secret)
    kubeconfig_file: str | None = None  # where it came from (stack setting kubeconfigFile or MESH_CLUSTER_KUBECONFIG)
    gateway_replicas: int = 1
    istiod_replicas: int = 1
    legacy_client: bool = False  # a pod outside the mesh (e2e: plaintext clients)
    sample_image: str = "meshops/sampleapp:0.1.0"  # the image the policies name; rewritten to the built digest tag
    reconciler: ReconcilerSettings | None = None  # `meshops:reconciler: "true"`: the GitOps reconciler in the cluster
    addons: tuple[str, ...] = ()  # Istio's add-ons (ADDONS), `meshops:addons: "true"` or a comma list
    ca_certs: dict[str, str] | None = None  # Istio's plug-in CA (`cacerts`), file name -> PEM (secret settings)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def creates_cluster(self) -> bool:
        return self.ephemeral and not self.kubeconfig

    @property
    def ingress_url(self) -> str:
        return f"http://localhost:{self.ingress_host_port}"

    @classmethod
    def from_mapping(cls, get: Any) -> StackSettings:
        """`get(key)` returns the raw string or None (pulumi.Config.get, or a dict's get)."""

        def req(key: str) -> str:
            v = get(key)
            if not v:
                raise ValueError(f"stack setting {NAMESPACE}:{key} is required (set it in stacks/Pulumi.<stack>.yaml)")
            return str(v)

        def flag(key: str) -> bool:
            return str(get(key) or "false").lower() in ("1", "true", "yes")

        return cls(
            reconciler=ReconcilerSettings.from_mapping(get, req) if flag("reconciler") else None,
            addons=_addons(get("addons")),
            ca_certs=_ca_certs(get),
            cluster_name=req("clusterName"),
            policy_env=req("policyEnv"),
            istio_version=req("istioVersion"),
            ingress_host_port=int(get("ingressHostPort") or 8080),
            ephemeral=flag("ephemeral"),
            node_image=get("nodeImage") or KIND_NODE_IMAGE,
            kubeconfig=get("kubeconfig") or None,
            kubeconfig_file=get("kubeconfigFile") or None,
            gateway_replicas=int(get("gatewayReplicas") or 1),
            istiod_replicas=int(get("istiodReplicas") or 1),
            legacy_client=flag("legacyClient"),
            sample_image=get("sampleImage") or "meshops/sampleapp:0.1.0",
        )


# Istio's add-ons as Istio ships them for a release: the plain manifests under samples/addons at that tag (they are
# rendered from the upstream charts by Istio's own scripts; pinning the tag pins every image in them).
ADDONS = ("prometheus", "grafana", "jaeger", "kiali")
ADDONS_URL = "https://raw.githubusercontent.com/istio/istio/{version}/samples/addons/{addon}.yaml"
# The plug-in CA's files, as Istio reads them from the `cacerts` secret in istio-system, by stack setting
CA_CERT_FILES = {
    "caCert": "ca-cert.pem",
    "caKey": "ca-key.pem",
    "rootCert": "root-cert.pem",
    "certChain": "cert-chain.pem",
}
RECONCILER_NAMESPACE = "meshops-system"
RECONCILER_PORT = 9900  # the webhook (/webhook) and /metrics


@dataclass(frozen=True)
class ReconcilerSettings:
    """`mesh reconcile` as a Deployment: which repository, ref and path it follows, and its webhook secret."""

    repo: str
    webhook_secret: str  # a secret stack setting (`pulumi config set --secret meshops:webhookSecret ...`)
    ref: str = "main"
    path: str = "policies"
    image: str | None = None  # built on kind from this checkout when unset; required on an existing cluster
    github_repo: str | None = None
    poll: float = 15.0

    @classmethod
    def from_mapping(cls, get: Any, req: Any) -> ReconcilerSettings:
        return cls(
            repo=req("reconcilerRepo"),
            webhook_secret=req("webhookSecret"),
            ref=get("reconcilerRef") or "main",
            path=get("reconcilerPath") or "policies",
            image=get("reconcilerImage") or None,
            github_repo=get("reconcilerGithubRepo") or None,
            poll=float(get("reconcilerPoll") or 15.0),
        )


def _addons(raw: str | None) -> tuple[str, ...]:
    if not raw or raw.lower() in ("false", "no", "0"):
        return ()
    if raw.lower() in ("true", "yes", "1"):
        return ADDONS
    names = tuple(a.strip() for a in raw.split(",") if a.strip())
    unknown = sorted(set(names) - set(ADDONS))
    if unknown:
        raise ValueError(
            f"stack setting {NAMESPACE}:addons: unknown add-on {', '.join(unknown)} (known: {', '.join(ADDONS)})"
        )
    return names


def _ca_certs(get: Any) -> dict[str, str] | None:
    """All four files or none: istiod falls back to its self-signed root on a partial `cacerts`, silently."""
    given = {file: get(key) for key, file in CA_CERT_FILES.items() if get(key)}
    if not given:
        return None
    missing = [f"{NAMESPACE}:{k}" for k, f in CA_CERT_FILES.items() if f not in given]
    if missing:
        raise ValueError(f"the plug-in CA needs every file: set {', '.join(missing)} (as secrets)")
    return given


def load_stack_file(path: Path) -> dict[str, str]:
    """`config:` of a stack file, keys without the `meshops:` prefix (secure values are left to Pulumi)."""
    data = yaml.safe_load(path.read_text()) or {}
    out = {}
    for k, v in (data.get("config") or {}).items():
        if isinstance(v, dict):
            continue  # `secure:` values stay encrypted in Pulumi's own config
        out[k.split(":", 1)[1] if k.startswith(f"{NAMESPACE}:") else k] = str(v)
    return out


def kind_config(s: StackSettings) -> dict[str, Any]:
    """One control-plane node; the gateway's NodePort mapped to the host so tests reach the ingress directly."""
    node: dict[str, Any] = {
        "role": "control-plane",
        "extraPortMappings": [
            {
                "containerPort": INGRESS_NODE_PORT,
                "hostPort": s.ingress_host_port,
                "listenAddress": "127.0.0.1",
                "protocol": "TCP",
            }
        ],
    }
    node["image"] = s.node_image
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": s.cluster_name, "nodes": [node]}


# CPU/memory requests sized so the ci stack (istiod, a gateway, 7 injected pods, kind's kube-system ~0.95 CPU) fits a
# 2-vCPU runner; the charts' defaults (istiod 500m, 100m a sidecar) add up to ~2.65 CPU.
ISTIOD_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
PROXY_REQUESTS = {"cpu": "20m", "memory": "64Mi"}
GATEWAY_REQUESTS = {"cpu": "50m", "memory": "64Mi"}

# Every Helm value path the program sets, with where the pinned chart (ISTIO_VERSION, istio/istio
# manifests/charts/...) reads it. A test fails on a value path not listed here: add it only after finding its reader.
# istiod's chart copies `pilot.*` to the top level (istio-discovery/templates/zzy_descope_legacy.yaml).
CHART_VALUE_PATHS: dict[str, dict[str, str]] = {
    "base": {
        "defaultRevision": "base/templates/defaultrevision-validatingwebhookconfiguration.yaml:2",
    },
    "istiod": {
        "base.validationFailurePolicy": "istio-discovery/templates/validatingwebhookconfiguration.yaml:50",
        "pilot.replicaCount": "istio-discovery/templates/deployment.yaml:28 (.Values.replicaCount after descoping)",
        "pilot.autoscaleEnabled": "istio-discovery/templates/autoscale.yaml:4, deployment.yaml:26",
        "pilot.resources.requests.cpu": "istio-discovery/templates/deployment.yaml:229 (.Values.resources)",
        "pilot.resources.requests.memory": "istio-discovery/templates/deployment.yaml:229 (.Values.resources)",
        "meshConfig.accessLogFile": "istio-discovery/templates/configmap.yaml:76 (toYaml .Values.meshConfig)",
        "meshConfig.enableTracing": "istio-discovery/templates/configmap.yaml:76 (toYaml .Values.meshConfig)",
        "meshConfig.defaultConfig.tracing.sampling": "istio-discovery/templates/configmap.yaml:76 (MeshConfig.defaultConfig"
        " = ProxyConfig.tracing.sampling, percent)",
        "global.proxy.holdApplicationUntilProxyStarts": "istio-discovery/files/injection-template.yaml:72",
        "global.proxy.resources.requests.cpu": "istio-discovery/files/injection-template.yaml:23",
        "global.proxy.resources.requests.memory": "istio-discovery/files/injection-template.yaml:23",
    },
    "gateway": {
        "labels.istio": "gateway/templates/_helpers.tpl:20, deployment.yaml:39",
        "labels.app": "gateway/templates/_helpers.tpl:19, deployment.yaml:39",
        "replicaCount": "gateway/templates/deployment.yaml:14",
        "autoscaling.enabled": "gateway/templates/deployment.yaml:13, hpa.yaml:1",
        "resources.requests.cpu": "gateway/templates/deployment.yaml:106",
        "resources.requests.memory": "gateway/templates/deployment.yaml:106",
        "service.type": "gateway/templates/service.yaml:1",
        "service.ports": "gateway/templates/service.yaml:58 (toYaml: each port as given, nodePort included)",
    },
}


def istiod_values(s: StackSettings) -> dict[str, Any]:
    return {
        # Render the validation webhook fail-closed from the start: istiod flips Ignore -> Fail at runtime,
        # which otherwise shows up as a diff on every `pulumi up` (istio/istio#44285).
        "base": {"validationFailurePolicy": "Fail"},
        "pilot": {
            "replicaCount": s.istiod_replicas,
            "autoscaleEnabled": False,
            "resources": {"requests": dict(ISTIOD_REQUESTS)},
        },
        "meshConfig": _mesh_config(s),
        "global": {"proxy": {"holdApplicationUntilProxyStarts": True, "resources": {"requests": dict(PROXY_REQUESTS)}}},
    }


def _mesh_config(s: StackSettings) -> dict[str, Any]:
    """With Jaeger installed every request is traced (the sidecars' default Zipkin address is the `zipkin` Service
    in istio-system that Istio's jaeger.yaml creates), so the kind workflow finds its one trace."""
    mesh_config: dict[str, Any] = {"accessLogFile": "/dev/stdout"}
    if "jaeger" in s.addons:
        mesh_config |= {"enableTracing": True, "defaultConfig": {"tracing": {"sampling": 100.0}}}
    return mesh_config


def gateway_values(s: StackSettings) -> dict[str, Any]:
    """Pod labels `istio: ingressgateway` match the policies' Gateway selector; port 80 on a fixed NodePort."""
    return {
        "labels": {"istio": "ingressgateway", "app": "istio-ingressgateway"},
        "replicaCount": s.gateway_replicas,
        "autoscaling": {"enabled": False},
        "resources": {"requests": dict(GATEWAY_REQUESTS)},
        "service": {
            "type": "NodePort",
            "ports": [
                {"name": "status-port", "port": 15021, "protocol": "TCP", "targetPort": 15021},
                {"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": INGRESS_NODE_PORT},
            ],
        },
    }


def base_values(s: StackSettings) -> dict[str, Any]:
    return {"defaultRevision": "default"}


def value_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Leaf paths of a values tree; lists are leaves (the charts read them whole, through toYaml)."""
    out: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= value_paths(value, path + ".")
        else:
            out.add(path)
    return out


def kind_create_command(s: StackSettings, kubeconfig: Path) -> str:
    """`--kubeconfig` keeps kind away from the user's ~/.kube/config: their current context stays as it was."""
    return f"kind create cluster --name {quote(s.cluster_name)} --kubeconfig {quote(str(kubeconfig))} --wait 120s --config -"


def kind_delete_command(s: StackSettings, kubeconfig: Path) -> str:
    return f"kind delete cluster --name {quote(s.cluster_name)} --kubeconfig {quote(str(kubeconfig))}"


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)

"""Typed stack settings (stacks/Pulumi.<stack>.yaml), and the pure pieces of the program: kind config, Helm values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ISTIO_CHARTS = "https://istio-release.storage.googleapis.com/charts"
INGRESS_NODE_PORT = 30080
ISTIO_NAMESPACE = "istio-system"
GATEWAY_NAMESPACE = "istio-ingress"
NAMESPACE = "meshops"  # Pulumi config namespace


@dataclass(frozen=True)
class StackSettings:
    cluster_name: str
    policy_env: str
    istio_version: str
    ingress_host_port: int = 8080
    node_image: str | None = None  # kind's default for its version when unset
    kubeconfig: str | None = None  # an existing cluster: no kind cluster is created
    gateway_replicas: int = 1
    istiod_replicas: int = 1
    legacy_client: bool = False  # a pod outside the mesh (e2e: plaintext clients)
    sample_image: str = "meshops/sampleapp:0.1.0"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def creates_cluster(self) -> bool:
        return not self.kubeconfig

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
            cluster_name=req("clusterName"),
            policy_env=req("policyEnv"),
            istio_version=req("istioVersion"),
            ingress_host_port=int(get("ingressHostPort") or 8080),
            node_image=get("nodeImage") or None,
            kubeconfig=get("kubeconfig") or None,
            gateway_replicas=int(get("gatewayReplicas") or 1),
            istiod_replicas=int(get("istiodReplicas") or 1),
            legacy_client=flag("legacyClient"),
            sample_image=get("sampleImage") or "meshops/sampleapp:0.1.0",
        )


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
    if s.node_image:
        node["image"] = s.node_image
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": s.cluster_name, "nodes": [node]}


def istiod_values(s: StackSettings) -> dict[str, Any]:
    return {
        # Render the validation webhook fail-closed from the start: istiod flips Ignore -> Fail at runtime,
        # which otherwise shows up as a diff on every `pulumi up` (istio/istio#44285).
        "base": {"validationFailurePolicy": "Fail"},
        "pilot": {"replicaCount": s.istiod_replicas, "autoscaleEnabled": False},
        "meshConfig": {"accessLogFile": "/dev/stdout"},
        "global": {"proxy": {"holdApplicationUntilProxyStarts": True}},
    }


def gateway_values(s: StackSettings) -> dict[str, Any]:
    """Pod labels `istio: ingressgateway` match the policies' Gateway selector; port 80 on a fixed NodePort."""
    return {
        "labels": {"istio": "ingressgateway", "app": "istio-ingressgateway"},
        "replicaCount": s.gateway_replicas,
        "autoscaling": {"enabled": False},
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


def kind_create_command(s: StackSettings) -> str:
    return f"kind create cluster --name {s.cluster_name} --wait 120s --config -"


def kind_delete_command(s: StackSettings) -> str:
    return f"kind delete cluster --name {s.cluster_name}"


def dump(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)

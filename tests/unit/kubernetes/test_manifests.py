"""Everything the kubernetes target renders is valid against what the pinned versions accept: core kinds against
Kubernetes' schemas, Istio kinds against the field sets of the pinned Istio CRDs (istio_crd_fields.json, derived
from Istio's own CRD bundle), Helm values against the value paths the pinned charts read, and the stacks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from mesh.compile import build_policies, dump_yaml, load_yaml, render_istio, render_workloads
from mesh.targets.kubernetes import incluster
from mesh.targets.kubernetes.settings import (
    ADDONS,
    CHART_VALUE_PATHS,
    ISTIO_VERSION,
    KIND_NODE_IMAGE,
    STACKS,
    ReconcilerSettings,
    StackSettings,
    base_values,
    gateway_values,
    istiod_values,
    kind_config,
    load_stack_file,
    value_paths,
)

K8S_VERSION = kubernetes_validate.latest_version()
CRDS = json.loads((Path(__file__).parent / "istio_crd_fields.json").read_text())
ENVS = ["dev", "e2e", "prod"]


def crd_violations(manifest: dict[str, Any]) -> list[str]:
    """Fields of `spec` the pinned CRD schema does not have, and enum values it does not allow."""
    kind = f"{manifest['apiVersion']}/{manifest['kind']}"
    if kind not in CRDS["kinds"]:
        return [f"{kind} is not served by Istio {CRDS['istio_version']}"]
    fields, enums = CRDS["kinds"][kind]["fields"], CRDS["kinds"][kind]["enums"]
    bad: list[str] = []

    def walk(value: Any, path: str) -> None:
        if f"{path}.*" in fields:
            return  # the schema preserves unknown fields here (e.g. a Struct)
        if isinstance(value, dict):
            is_map = f"{path}{{}}" in fields
            for key, sub in value.items():
                child = f"{path}{{}}" if is_map else (f"{path}.{key}" if path else key)
                if child not in fields:
                    bad.append(f"{kind} spec.{child}")
                else:
                    walk(sub, child)
        elif isinstance(value, list):
            for item in value:
                walk(item, f"{path}[]")
        elif path in enums and str(value) not in enums[path]:
            bad.append(f"{kind} spec.{path}={value!r} (allowed: {', '.join(enums[path])})")

    walk(manifest["spec"], "")
    return bad


@pytest.mark.parametrize("env", ENVS)
def test_workload_manifests_validate_against_kubernetes_schemas(env: str) -> None:
    manifests = render_workloads(build_policies(env))
    assert manifests
    for m in manifests:
        kubernetes_validate.validate(m, K8S_VERSION, strict=True)


@pytest.mark.parametrize("env", ENVS)
def test_istio_manifests_use_only_fields_of_the_pinned_crds(env: str) -> None:
    rendered = render_istio(build_policies(env))
    assert rendered
    problems = [p for m in rendered for p in crd_violations(m)]
    assert problems == []


def test_the_crd_check_catches_unknown_fields_and_bad_enums() -> None:
    vs = next(m for m in render_istio(build_policies("dev")) if m["kind"] == "VirtualService")
    assert crd_violations({**vs, "spec": {**vs["spec"], "htttp": []}}) == [
        "networking.istio.io/v1/VirtualService spec.htttp"
    ]
    pa = next(m for m in render_istio(build_policies("dev")) if m["kind"] == "PeerAuthentication")
    found = crd_violations({**pa, "spec": {**pa["spec"], "mtls": {"mode": "STRICTLY"}}})
    assert len(found) == 1 and "spec.mtls.mode='STRICTLY'" in found[0]


def test_the_crd_field_list_is_of_the_pinned_istio() -> None:
    assert CRDS["istio_version"] == ISTIO_VERSION, "re-derive istio_crd_fields.json (derive_istio_crd_fields.py)"
    assert "manifests/charts/base/files/crd-all.gen.yaml" in CRDS["source"]


@pytest.mark.parametrize("env", ENVS)
def test_istio_manifests_round_trip_through_the_typed_model(env: str) -> None:
    rendered = render_istio(build_policies(env))
    again = render_istio(load_yaml(dump_yaml(rendered), f"{env}.yaml"))
    assert again == rendered


@pytest.mark.parametrize(
    ("chart", "values"),
    [("base", base_values), ("istiod", istiod_values), ("gateway", gateway_values)],
)
def test_helm_value_paths_are_ones_the_pinned_chart_reads(chart: str, values: Any) -> None:
    """Over every shipped stack, and each with every add-on asked for (they set tracing values)."""
    used: set[str] = set()
    for stack in ("dev", "ci", "staging", "prod"):
        s = StackSettings.from_mapping(load_stack_file(STACKS / f"Pulumi.{stack}.yaml").get)
        for variant in (s, replace(s, addons=ADDONS)):
            paths = value_paths(values(variant))
            unknown = paths - set(CHART_VALUE_PATHS[chart])
            assert not unknown, f"{chart}: {sorted(unknown)} not in CHART_VALUE_PATHS (find where the chart reads them)"
            used |= paths
    stale = set(CHART_VALUE_PATHS[chart]) - used
    assert not stale, f"{chart}: CHART_VALUE_PATHS lists {sorted(stale)}, which the program no longer sets"


def test_value_paths_flatten_nested_values() -> None:
    assert value_paths({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b", "a.c.d", "e"}


def _cpu(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def test_ci_stack_requests_fit_a_two_vcpu_runner() -> None:
    """istiod + gateway + one sidecar per injected pod + kind's kube-system, against 2 vCPU with 10 % headroom."""
    s = StackSettings.from_mapping(load_stack_file(STACKS / "Pulumi.ci.yaml").get)
    kube_system = 950  # kind v0.31 control plane: apiserver 250, controller-manager 200, scheduler 100, etcd 100,
    # coredns 2 x 100, kindnet 100 (millicores, their manifests' requests)
    pods = sum(
        m["spec"]["replicas"] for m in render_workloads(build_policies(s.policy_env)) if m["kind"] == "Deployment"
    )
    istiod = _cpu(istiod_values(s)["pilot"]["resources"]["requests"]["cpu"]) * s.istiod_replicas
    gateway = _cpu(gateway_values(s)["resources"]["requests"]["cpu"]) * s.gateway_replicas
    sidecars = _cpu(istiod_values(s)["global"]["proxy"]["resources"]["requests"]["cpu"]) * pods
    total = kube_system + istiod + gateway + sidecars
    assert total <= 1800, f"{total}m requested: istiod {istiod}, gateway {gateway}, {pods} sidecars {sidecars}"


def test_every_deployment_runs_the_sample_image_with_its_identity() -> None:
    for m in render_workloads(build_policies("e2e")):
        if m["kind"] == "Deployment":
            pod = m["spec"]["template"]["spec"]
            assert pod["containers"][0]["image"] == "meshops/sampleapp:0.1.0"
            assert pod["serviceAccountName"] == m["metadata"]["labels"]["app"]
            assert m["spec"]["selector"]["matchLabels"] == m["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("stack", ["dev", "ci", "staging", "prod"])
def test_stack_files_parse_into_settings_and_pin_istio(stack: str) -> None:
    s = StackSettings.from_mapping(load_stack_file(STACKS / f"Pulumi.{stack}.yaml").get)
    build_policies(s.policy_env)  # the environment exists
    assert s.istio_version == ISTIO_VERSION and s.cluster_name.startswith("meshops-")


def test_only_dev_and_ci_may_create_kind() -> None:
    ephemeral = {
        p.name: StackSettings.from_mapping(load_stack_file(p).get).ephemeral for p in STACKS.glob("Pulumi.*.yaml")
    }
    assert ephemeral == {
        "Pulumi.dev.yaml": True,
        "Pulumi.ci.yaml": True,
        "Pulumi.staging.yaml": False,
        "Pulumi.prod.yaml": False,
    }


def test_ci_stack_runs_the_e2e_environment_with_a_legacy_client() -> None:
    s = StackSettings.from_mapping(load_stack_file(STACKS / "Pulumi.ci.yaml").get)
    assert (s.policy_env, s.legacy_client) == ("e2e", True)


def test_kind_config_pins_a_node_image_istio_supports() -> None:
    s = StackSettings(cluster_name="c", policy_env="dev", istio_version=ISTIO_VERSION, ingress_host_port=9090)
    cfg = kind_config(s)
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cfg["kind"] == "Cluster"
    (node,) = cfg["nodes"]
    assert node["image"] == KIND_NODE_IMAGE and "@sha256:" in KIND_NODE_IMAGE
    minor = int(KIND_NODE_IMAGE.split(":v1.")[1].split(".")[0])
    assert minor >= 32, "Istio 1.30 needs Kubernetes >= 1.32"
    assert node["extraPortMappings"][0]["hostPort"] == 9090


def test_helm_values_shape() -> None:
    s = StackSettings(cluster_name="c", policy_env="dev", istio_version=ISTIO_VERSION, gateway_replicas=2)
    assert gateway_values(s)["replicaCount"] == 2 and gateway_values(s)["autoscaling"] == {"enabled": False}
    assert istiod_values(s)["pilot"]["autoscaleEnabled"] is False


def test_missing_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="meshops:istioVersion is required"):
        StackSettings.from_mapping({"clusterName": "c", "policyEnv": "dev"}.get)


# --- the in-cluster reconciler, the plug-in CA, add-on settings ----------------------------------------------------

RECONCILER = ReconcilerSettings(repo="https://github.com/acme/policies", webhook_secret="x", github_repo="acme/p")


def test_reconciler_manifests_validate_against_kubernetes_schemas() -> None:
    rendered = [
        *incluster.reconciler_manifests(RECONCILER, "prod", "meshops/reconciler:1", ["default", "istio-system"]),
        incluster.webhook_secret("s3cret"),
        incluster.cacerts({"ca-cert.pem": "a", "ca-key.pem": "b", "root-cert.pem": "c", "cert-chain.pem": "d"}),
    ]
    assert {m["kind"] for m in rendered} == {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "Secret",
    }
    for m in rendered:
        kubernetes_validate.validate(m, K8S_VERSION, strict=True)


def test_the_reconciler_deployment_mounts_its_secret_and_serves_its_webhook_port() -> None:
    (dep,) = [
        m for m in incluster.reconciler_manifests(RECONCILER, "prod", "img", ["default"]) if m["kind"] == "Deployment"
    ]
    pod = dep["spec"]["template"]["spec"]
    assert pod["volumes"][1]["secret"]["secretName"] == incluster.webhook_secret("x")["metadata"]["name"]
    (c,) = pod["containers"]
    assert c["args"][c["args"].index("--listen") + 1].endswith(":9900")
    assert c["args"][-2:] == ["--github-repo", "acme/p"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"  # one reconcile at a time
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MESH_INGRESS_URL"] == "http://istio-ingressgateway.istio-ingress.svc.cluster.local"


def test_reconciler_and_addon_settings_parse_and_name_what_is_missing() -> None:
    base = {"clusterName": "c", "policyEnv": "dev", "istioVersion": ISTIO_VERSION}
    s = StackSettings.from_mapping({**base, "reconciler": "true", "reconcilerRepo": "r", "webhookSecret": "w"}.get)
    assert s.reconciler == ReconcilerSettings(repo="r", webhook_secret="w")
    with pytest.raises(ValueError, match="meshops:webhookSecret is required"):
        StackSettings.from_mapping({**base, "reconciler": "true", "reconcilerRepo": "r"}.get)
    assert StackSettings.from_mapping({**base, "addons": "true"}.get).addons == ADDONS
    assert StackSettings.from_mapping({**base, "addons": "prometheus, jaeger"}.get).addons == ("prometheus", "jaeger")
    assert StackSettings.from_mapping(base.get).addons == ()
    with pytest.raises(ValueError, match="unknown add-on zipkin"):
        StackSettings.from_mapping({**base, "addons": "zipkin"}.get)


def test_the_plug_in_ca_takes_all_four_files_or_none() -> None:
    base = {"clusterName": "c", "policyEnv": "dev", "istioVersion": ISTIO_VERSION}
    pems = {"caCert": "a", "caKey": "b", "rootCert": "c", "certChain": "d"}
    assert StackSettings.from_mapping({**base, **pems}.get).ca_certs == {
        "ca-cert.pem": "a",
        "ca-key.pem": "b",
        "root-cert.pem": "c",
        "cert-chain.pem": "d",
    }
    with pytest.raises(ValueError, match="meshops:certChain"):
        StackSettings.from_mapping({**base, "caCert": "a", "caKey": "b", "rootCert": "c"}.get)


def test_the_reconciler_image_builds_from_this_checkout_and_its_tag_follows_the_source() -> None:
    root = incluster.source_root()
    assert (root / "pyproject.toml").exists() and incluster.DOCKERFILE.exists()
    dockerfile = incluster.DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["mesh"]' in dockerfile and "COPY mesh /src/mesh" in dockerfile
    assert len(incluster.source_digest(root)) == 16

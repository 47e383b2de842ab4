"""Everything the kubernetes target renders is valid: core kinds against Kubernetes' schemas, Istio kinds through our
typed model, the kind config and Helm values by their shape."""

from __future__ import annotations

import kubernetes_validate
import pytest

from mesh.compile import build_policies, dump_yaml, load_yaml, render_istio, render_workloads
from mesh.targets.kubernetes.settings import (
    StackSettings,
    gateway_values,
    istiod_values,
    kind_config,
    load_stack_file,
)
from tests.conftest import ROOT

K8S_VERSION = kubernetes_validate.latest_version()


@pytest.mark.parametrize("env", ["dev", "e2e", "prod"])
def test_workload_manifests_validate_against_kubernetes_schemas(env: str) -> None:
    manifests = render_workloads(build_policies(env))
    assert manifests
    for m in manifests:
        kubernetes_validate.validate(m, K8S_VERSION, strict=True)


@pytest.mark.parametrize("env", ["dev", "e2e", "prod"])
def test_istio_manifests_round_trip_through_the_typed_model(env: str) -> None:
    rendered = render_istio(build_policies(env))
    again = render_istio(load_yaml(dump_yaml(rendered), f"{env}.yaml"))
    assert again == rendered


def test_every_deployment_runs_the_sample_image_with_its_identity() -> None:
    for m in render_workloads(build_policies("e2e")):
        if m["kind"] == "Deployment":
            pod = m["spec"]["template"]["spec"]
            assert pod["containers"][0]["image"] == "meshops/sampleapp:0.1.0"
            assert pod["serviceAccountName"] == m["metadata"]["labels"]["app"]
            assert m["spec"]["selector"]["matchLabels"] == m["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("stack", ["dev", "ci", "staging", "prod"])
def test_stack_files_parse_into_settings(stack: str) -> None:
    raw = load_stack_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml")
    s = StackSettings.from_mapping(raw.get)
    build_policies(s.policy_env)  # the environment exists
    assert s.istio_version and s.cluster_name.startswith("meshops-")


def test_ci_stack_runs_the_e2e_environment_with_a_legacy_client() -> None:
    s = StackSettings.from_mapping(load_stack_file(ROOT / "stacks" / "Pulumi.ci.yaml").get)
    assert (s.policy_env, s.legacy_client) == ("e2e", True)


def test_kind_config_shape() -> None:
    s = StackSettings(
        cluster_name="c",
        policy_env="dev",
        istio_version="1.30.4",
        ingress_host_port=9090,
        node_image="kindest/node:v1.34.0",
    )
    cfg = kind_config(s)
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4" and cfg["kind"] == "Cluster"
    (node,) = cfg["nodes"]
    assert node["image"] == "kindest/node:v1.34.0"
    assert node["extraPortMappings"][0]["hostPort"] == 9090


def test_helm_values_shape() -> None:
    s = StackSettings(cluster_name="c", policy_env="dev", istio_version="1.30.4", gateway_replicas=2)
    assert gateway_values(s)["replicaCount"] == 2 and gateway_values(s)["autoscaling"] == {"enabled": False}
    assert istiod_values(s)["pilot"]["autoscaleEnabled"] is False


def test_missing_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match="meshops:istioVersion is required"):
        StackSettings.from_mapping({"clusterName": "c", "policyEnv": "dev"}.get)

"""The Pulumi program's resource graph, under Pulumi's own mocks (no cluster, no CLI: this is not a live run)."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from mesh.targets.kubernetes.settings import INGRESS_NODE_PORT, StackSettings


class Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.created: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.created[args.name] = args
        outputs = dict(args.inputs)
        if args.typ == "command:local:Command":
            outputs["stdout"] = "apiVersion: v1\nkind: Config\nclusters: []\n"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


MOCKS = Mocks()
pulumi.runtime.set_mocks(MOCKS, preview=False)

from mesh.targets.kubernetes.program import Deployed, program  # noqa: E402  (mocks first)

DEV = StackSettings(cluster_name="meshops-dev", policy_env="dev", istio_version="1.30.4", ingress_host_port=8080)


def _settled(deployed: Deployed, check: Any) -> pulumi.Output[Any]:
    return pulumi.Output.all(*[r.urn for r in deployed.resources.values()]).apply(lambda _: check())


@pulumi.runtime.test
def test_istio_charts_install_in_order_from_the_official_repo() -> Any:
    MOCKS.created.clear()
    d = program(DEV)
    assert d.depends["istio-base"] == []
    assert d.depends["istiod"] == ["istio-base"]
    assert d.depends["istio-ingressgateway"] == ["istiod"]
    assert d.depends["provider"] == ["kind-kubeconfig"]

    def check() -> None:
        for name, chart in (("istio-base", "base"), ("istiod", "istiod"), ("istio-ingressgateway", "gateway")):
            r = MOCKS.created[name]
            assert r.typ == "kubernetes:helm.sh/v3:Release"
            assert r.inputs["chart"] == chart and r.inputs["version"] == "1.30.4"
            assert r.inputs["repositoryOpts"]["repo"] == "https://istio-release.storage.googleapis.com/charts"
        assert MOCKS.created["istiod"].inputs["values"]["base"]["validationFailurePolicy"] == "Fail"
        gw = MOCKS.created["istio-ingressgateway"].inputs["values"]
        assert gw["labels"]["istio"] == "ingressgateway"
        assert {p["nodePort"] for p in gw["service"]["ports"] if "nodePort" in p} == {INGRESS_NODE_PORT}

    return _settled(d, check)


@pulumi.runtime.test
def test_kind_cluster_with_the_ingress_port_mapped() -> Any:
    MOCKS.created.clear()
    d = program(DEV)

    def check() -> None:
        import yaml

        cluster = MOCKS.created["kind-cluster"]
        assert cluster.inputs["create"].startswith("kind create cluster --name meshops-dev")
        assert cluster.inputs["delete"] == "kind delete cluster --name meshops-dev"
        cfg = yaml.safe_load(cluster.inputs["stdin"])
        (mapping,) = cfg["nodes"][0]["extraPortMappings"]
        assert (mapping["containerPort"], mapping["hostPort"]) == (INGRESS_NODE_PORT, 8080)
        assert "kind load docker-image meshops/sampleapp:0.1.0" in MOCKS.created["sample-image"].inputs["create"]

    return _settled(d, check)


@pulumi.runtime.test
def test_workloads_and_policies_come_from_the_same_compiler() -> Any:
    MOCKS.created.clear()
    d = program(DEV)
    from mesh.compile import build_policies, render_istio

    expected = {
        f"{m['kind'].lower()}-{m['metadata']['namespace']}-{m['metadata']['name']}"
        for m in render_istio(build_policies("dev"))
    }

    def check() -> None:
        crs = {
            n: a
            for n, a in MOCKS.created.items()
            if a.typ.startswith("kubernetes:networking.istio.io") or a.typ.startswith("kubernetes:security.istio.io")
        }
        assert set(crs) == expected
        vs = crs["virtualservice-default-reviews"].inputs
        assert vs["spec"]["http"][1]["route"][0]["weight"] == 50  # dev canary
        deployments = {n for n, a in MOCKS.created.items() if a.typ == "kubernetes:apps/v1:Deployment"}
        assert deployments == {
            f"deployment-default-{n}"
            for n in ("productpage-v1", "details-v1", "reviews-v1", "reviews-v2", "reviews-v3", "ratings-v1")
        }
        ns = MOCKS.created["namespace-default"].inputs
        assert ns["metadata"]["labels"]["istio-injection"] == "enabled"
        # every workload and policy waits for istiod (its injection webhook and CRDs)
        for name in [*expected, *deployments]:
            assert "istiod" in d.depends[name], name
        for name in deployments:
            assert "sample-image" in d.depends[name]

    return _settled(d, check)


@pulumi.runtime.test
def test_per_stack_settings_are_respected() -> Any:
    MOCKS.created.clear()
    prod = StackSettings(
        cluster_name="meshops-prod",
        policy_env="prod",
        istio_version="1.30.4",
        kubeconfig="apiVersion: v1\nkind: Config\n",
        gateway_replicas=3,
        istiod_replicas=2,
    )
    d = program(prod)
    assert "kind-cluster" not in d.resources and "sample-image" not in d.resources  # an existing cluster
    assert d.depends["provider"] == []

    def check() -> None:
        assert MOCKS.created["istio-ingressgateway"].inputs["values"]["replicaCount"] == 3
        assert MOCKS.created["istiod"].inputs["values"]["pilot"]["replicaCount"] == 2
        vs = MOCKS.created["virtualservice-default-reviews"].inputs
        assert vs["spec"]["http"][1]["route"][1]["weight"] == 10  # prod canary
        assert "virtualservice-default-ratings" in MOCKS.created

    return _settled(d, check)


@pulumi.runtime.test
def test_kubeconfig_is_exported_as_a_secret() -> Any:
    MOCKS.created.clear()
    d = program(DEV)
    provider = d.resources["provider"]
    assert isinstance(provider, pulumi.ProviderResource)

    def check() -> None:
        cmd = MOCKS.created["kind-kubeconfig"]
        assert cmd.inputs["create"] == "kind get kubeconfig --name meshops-dev"

    return _settled(d, check)


@pulumi.runtime.test
def test_outputs_and_the_kubeconfig_is_secret() -> Any:
    from mesh.targets.kubernetes import program as prog

    exported: dict[str, Any] = {}
    original = pulumi.export
    try:
        pulumi.export = lambda name, value: exported.__setitem__(name, value)  # type: ignore[assignment]
        prog.pulumi.export = pulumi.export  # type: ignore[attr-defined]
        program(DEV)
    finally:
        pulumi.export = original
        prog.pulumi.export = original  # type: ignore[attr-defined]
    assert set(exported) == {"ingress_url", "kubeconfig", "policy_env", "policy_revision", "istio_version"}
    assert exported["ingress_url"] == "http://localhost:8080"
    assert "manifests sha256:" in exported["policy_revision"]

    def secret(is_secret: bool) -> None:
        assert is_secret, "the kubeconfig output must be a secret"

    return pulumi.Output.from_input(exported["kubeconfig"].is_secret()).apply(secret)


def test_analysis_errors_stop_the_deployment(tmp_path: Any) -> None:
    from mesh.errors import AnalysisFailed

    pkg = tmp_path / "bad"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from mesh.api import MeshConfig, VirtualService, helpers as h\n"
        "def build(env):\n"
        "    return MeshConfig().add(VirtualService(name='x', hosts=['x'], http=[h.split('x', {'a': 0, 'b': 0})]))\n"
    )
    MOCKS.created.clear()
    with pytest.raises(AnalysisFailed):
        program(DEV, policies_dir=pkg)
    assert MOCKS.created == {}

"""The Pulumi program's resource graph as Pulumi's engine receives it, under Pulumi's own mocks (no cluster, no
CLI: this is not a live run). A recording monitor keeps every RegisterResource request: its type, inputs, provider
reference, dependencies, delete-before-replace flag and secret outputs, so removing a `provider=` or a `depends_on=`
from the program fails a test here."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ParamSpec, cast

import pulumi
import pytest
import yaml
from google.protobuf.json_format import MessageToDict
from pulumi.runtime import mocks as pulumi_mocks

from mesh.compile import build_policies, render_istio, render_workloads
from mesh.compile.render import SYSTEM_NAMESPACES
from mesh.targets.kubernetes.settings import (
    ADDONS,
    GATEWAY_NAMESPACE,
    INGRESS_NODE_PORT,
    ISTIO_NAMESPACE,
    ISTIO_VERSION,
    ReconcilerSettings,
    StackSettings,
)

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # Pulumi's wire signature of a secret value
SIG_KEY = "4dabf18193072939515e22adb298388d"


@dataclass
class Registered:
    """One RegisterResource request, as the engine gets it."""

    typ: str
    urn: str
    parent: str  # URN, or "" for the stack
    inputs: dict[str, Any]
    provider: str  # "<provider urn>::<id>", or "" for the default provider
    dependencies: list[str]  # URNs
    delete_before_replace: bool
    secret_outputs: list[str]
    secret_inputs: set[str]


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "command:local:Command":
            outputs["stdout"] = "apiVersion: v1\nkind: Config\nclusters: []\n"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


P = ParamSpec("P")


def pulumi_test(fn: Callable[P, Any]) -> Callable[P, Any]:
    """`pulumi.runtime.test` (it awaits the Output a test returns) is untyped; this keeps the test's own signature."""
    return cast("Callable[P, Any]", pulumi.runtime.test(fn))  # type: ignore[no-untyped-call]


class Recorder(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.seen: dict[str, Registered] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # Pulumi's mocks are unannotated
        if request.type != "pulumi:pulumi:Stack":
            raw = MessageToDict(request.object)
            self.seen[request.name] = Registered(
                typ=request.type,
                urn=response.urn,
                parent=request.parent,
                inputs=pulumi.runtime.rpc.deserialize_properties(request.object),
                provider=request.provider,
                dependencies=list(request.dependencies),
                delete_before_replace=request.deleteBeforeReplace,
                secret_outputs=list(request.additionalSecretOutputs),
                secret_inputs={k for k, v in raw.items() if isinstance(v, dict) and v.get(SIG_KEY) == SECRET_SIG},
            )
        return response

    def name_of(self, urn: str) -> str:
        return urn.rsplit("::", 1)[1]

    def deps(self, name: str) -> set[str]:
        return {self.name_of(u) for u in self.seen[name].dependencies}

    def provider_of(self, name: str) -> str:
        ref = self.seen[name].provider  # "<provider urn>::<provider id>"; the urn ends with the provider's name
        return ref.split("::")[-2] if ref else "the default provider"


MOCKS = Mocks()
MONITOR = Recorder(MOCKS)
pulumi.runtime.set_mocks(MOCKS, preview=False, monitor=MONITOR)

from mesh.targets.kubernetes.program import Deployed, program  # noqa: E402  (mocks first)

HOME = Path(tempfile.mkdtemp(prefix="meshops home "))  # a space: commands must quote their paths
DEV = StackSettings(
    cluster_name="meshops-dev", policy_env="dev", istio_version=ISTIO_VERSION, ingress_host_port=8080, ephemeral=True
)
CI = StackSettings(
    cluster_name="meshops-ci", policy_env="e2e", istio_version=ISTIO_VERSION, ephemeral=True, legacy_client=True
)
PROD = StackSettings(
    cluster_name="meshops-prod",
    policy_env="prod",
    istio_version=ISTIO_VERSION,
    kubeconfig="apiVersion: v1\nkind: Config\n",
    gateway_replicas=3,
    istiod_replicas=2,
)
# Namespaces the program must never create: Kubernetes' own, and the ones the Istio charts create
NEVER_CREATED = SYSTEM_NAMESPACES | {ISTIO_NAMESPACE, GATEWAY_NAMESPACE}


def teardown_module() -> None:
    shutil.rmtree(HOME, ignore_errors=True)


def _run(settings: StackSettings) -> Deployed:
    MONITOR.seen.clear()
    return program(settings, home=HOME)


def _settled(deployed: Deployed, check: Any) -> pulumi.Output[Any]:
    return pulumi.Output.all(*[r.urn for r in deployed.resources.values()]).apply(lambda _: check())


@pytest.mark.parametrize("settings", [DEV, CI, PROD], ids=["dev", "ci", "prod"])
@pulumi_test
def test_every_kubernetes_resource_goes_through_the_stack_provider(settings: StackSettings) -> Any:
    d = _run(settings)

    def check() -> None:
        kube = [n for n, r in MONITOR.seen.items() if r.typ.startswith("kubernetes:")]
        assert len(kube) > 20
        for name in kube:
            assert MONITOR.provider_of(name) == "kubernetes", f"{name} uses {MONITOR.seen[name].provider or 'default'}"
        assert MONITOR.seen["kubernetes"].typ == "pulumi:providers:kubernetes"

    return _settled(d, check)


@pulumi_test
def test_istio_charts_install_in_order_from_the_official_repo() -> Any:
    d = _run(DEV)

    def check() -> None:
        assert MONITOR.deps("istio-base") == set()
        assert MONITOR.deps("istiod") == {"istio-base"}
        assert MONITOR.deps("istio-ingressgateway") == {"istiod"}
        assert MONITOR.deps("kubernetes") == {"kind-kubeconfig"}
        for name, chart in (("istio-base", "base"), ("istiod", "istiod"), ("istio-ingressgateway", "gateway")):
            r = MONITOR.seen[name]
            assert r.typ == "kubernetes:helm.sh/v3:Release"
            assert r.inputs["chart"] == chart and r.inputs["version"] == ISTIO_VERSION
            assert r.inputs["repositoryOpts"]["repo"] == "https://istio-release.storage.googleapis.com/charts"
        assert MONITOR.seen["istiod"].inputs["values"]["base"]["validationFailurePolicy"] == "Fail"
        gw = MONITOR.seen["istio-ingressgateway"].inputs["values"]
        assert gw["labels"]["istio"] == "ingressgateway"
        assert {p["nodePort"] for p in gw["service"]["ports"] if "nodePort" in p} == {INGRESS_NODE_PORT}

    return _settled(d, check)


@pulumi_test
def test_workloads_and_policies_wait_for_istiod_their_namespace_and_the_image() -> Any:
    d = _run(CI)

    def check() -> None:
        kinds = ("kubernetes:core/v1:", "kubernetes:apps/v1:", "kubernetes:networking.istio.io", "kubernetes:security")
        workload_or_policy = [
            n for n, r in MONITOR.seen.items() if r.typ.startswith(kinds) and "Namespace" not in r.typ
        ]
        assert len(workload_or_policy) > 20
        for name in workload_or_policy:
            deps = MONITOR.deps(name)
            assert "istiod" in deps, name  # its injection webhook and CRDs
            ns = MONITOR.seen[name].inputs["metadata"]["namespace"]
            # its namespace: labelled by a patch, created by the charts (istiod comes after base), or ours
            owner = {"default": "namespace-labels-default", ISTIO_NAMESPACE: "istiod"}.get(ns, f"namespace-{ns}")
            assert owner in deps, f"{name} does not wait for namespace {ns}"
        deployments = [n for n, r in MONITOR.seen.items() if r.typ == "kubernetes:apps/v1:Deployment"]
        rendered = [m for m in render_workloads(build_policies("e2e")) if m["kind"] == "Deployment"]
        assert len(deployments) == len(rendered) + 1  # the sample workloads + the legacy client
        for name in deployments:
            assert "sample-image" in MONITOR.deps(name), name

    return _settled(d, check)


@pytest.mark.parametrize("settings", [DEV, CI, PROD], ids=["dev", "ci", "prod"])
@pulumi_test
def test_no_namespace_kubernetes_or_the_charts_create_is_created(settings: StackSettings) -> Any:
    d = _run(settings)

    def check() -> None:
        created = {
            r.inputs["metadata"]["name"] for r in MONITOR.seen.values() if r.typ == "kubernetes:core/v1:Namespace"
        }
        assert not created & NEVER_CREATED, f"creates {sorted(created & NEVER_CREATED)}: they exist already"
        # the sample app stays in `default`, labelled for injection by a patch (server-side apply of labels only)
        patch = MONITOR.seen["namespace-labels-default"]
        assert patch.typ == "kubernetes:core/v1:NamespacePatch"
        assert patch.inputs["metadata"]["labels"]["istio-injection"] == "enabled"
        assert set(patch.inputs) == {"apiVersion", "kind", "metadata"}  # no spec: nothing but labels is owned

    return _settled(d, check)


@pulumi_test
def test_kind_cluster_is_deleted_before_it_is_recreated_and_its_kubeconfig_read_again() -> Any:
    d = _run(DEV)

    def check() -> None:
        cluster = MONITOR.seen["kind-cluster"]
        assert cluster.delete_before_replace, "`kind create cluster --name X` fails while X exists"
        kubeconfig = MONITOR.seen["kind-kubeconfig"]
        assert MONITOR.deps("kind-kubeconfig") == {"kind-cluster"}
        assert kubeconfig.inputs["triggers"] == ["kind-cluster-id"], "a recreated cluster must be read again"
        assert MONITOR.seen["sample-image"].inputs["triggers"][1] == "kind-cluster-id"  # reloaded into it too
        assert MONITOR.deps("sample-image") == {"kind-cluster"}
        cfg = yaml.safe_load(cluster.inputs["stdin"])
        (mapping,) = cfg["nodes"][0]["extraPortMappings"]
        assert (mapping["containerPort"], mapping["hostPort"]) == (INGRESS_NODE_PORT, 8080)
        assert cfg["nodes"][0]["image"].startswith("kindest/node:v1.35.0@sha256:")

    return _settled(d, check)


@pulumi_test
def test_kind_uses_its_own_kubeconfig_file_and_commands_quote_paths() -> Any:
    d = _run(DEV)

    def check() -> None:
        own = str(HOME / "kind" / "meshops-dev.kubeconfig")
        for key in ("create", "delete"):
            argv = shlex.split(MONITOR.seen["kind-cluster"].inputs[key].split("&&")[0])
            assert argv[argv.index("--kubeconfig") + 1] == own, "kind must not touch ~/.kube/config"
        build = shlex.split(MONITOR.seen["sample-image"].inputs["create"].split("&&")[0])
        assert build[:2] == ["docker", "build"] and Path(build[-1]).parent == HOME / "build"  # one argument

    return _settled(d, check)


@pulumi_test
def test_a_rebuilt_image_reaches_the_pods() -> Any:
    from mesh.targets.kubernetes import image

    d = _run(CI)
    built = image.prepare("meshops/sampleapp", HOME / "build")

    def check() -> None:
        assert built.tag == f"meshops/sampleapp:{built.digest}"
        assert built.digest in MONITOR.seen["sample-image"].inputs["triggers"]
        assert f"kind load docker-image {built.tag}" in MONITOR.seen["sample-image"].inputs["create"]
        for r in MONITOR.seen.values():
            if r.typ == "kubernetes:apps/v1:Deployment":
                images = {c["image"] for c in r.inputs["spec"]["template"]["spec"]["containers"]}
                assert images == {built.tag}, images  # a new digest changes every pod template: they roll

    return _settled(d, check)


def test_the_image_tag_follows_the_build_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh.targets.kubernetes import image

    before = image.prepare("r", tmp_path)
    assert (before.context / "Dockerfile").exists() and (before.context / "mesh/sampleapp/server.py").exists()
    changed = tmp_path / "server.py"
    changed.write_text((before.context / "mesh/sampleapp/server.py").read_text() + "\n# changed\n")
    files = {**image.context_files(), "mesh/sampleapp/server.py": changed}
    monkeypatch.setattr(image, "context_files", lambda: files)
    after = image.prepare("r", tmp_path)
    assert after.tag != before.tag and after.context != before.context


@pulumi_test
def test_an_existing_cluster_gets_no_kind_and_its_own_settings() -> Any:
    d = _run(PROD)
    assert "kind-cluster" not in d.resources and "sample-image" not in d.resources

    def check() -> None:
        assert "kind-cluster" not in MONITOR.seen and "sample-image" not in MONITOR.seen
        assert MONITOR.deps("kubernetes") == set()
        assert MONITOR.seen["istio-ingressgateway"].inputs["values"]["replicaCount"] == 3
        assert MONITOR.seen["istiod"].inputs["values"]["pilot"]["replicaCount"] == 2
        vs = MONITOR.seen["virtualservice-default-reviews"].inputs
        assert vs["spec"]["http"][1]["route"][1]["weight"] == 10  # prod canary
        images = {
            c["image"]
            for r in MONITOR.seen.values()
            if r.typ == "kubernetes:apps/v1:Deployment"
            for c in r.inputs["spec"]["template"]["spec"]["containers"]
        }
        assert images == {"meshops/sampleapp:0.1.0"}  # as the policies name it: a registry image

    return _settled(d, check)


@pytest.mark.parametrize("settings", [DEV, PROD], ids=["kind", "existing"])
@pulumi_test
def test_kubeconfig_is_a_secret_wherever_it_goes(settings: StackSettings) -> Any:
    d = _run(settings)

    def check() -> None:
        assert "kubeconfig" in MONITOR.seen["kubernetes"].secret_inputs, "the provider's kubeconfig went in clear"
        if settings.creates_cluster:
            assert MONITOR.seen["kind-kubeconfig"].secret_outputs == ["stdout"]

    return _settled(d, check)


@pulumi_test
def test_workloads_and_policies_come_from_the_same_compiler() -> Any:
    d = _run(DEV)
    config = build_policies("dev")
    expected = {
        f"{m['kind'].lower()}-{m['metadata']['namespace']}-{m['metadata']['name']}" for m in render_istio(config)
    }
    workloads = {m["metadata"]["name"] for m in render_workloads(config) if m["kind"] == "Deployment"}

    def check() -> None:
        crs = {
            n
            for n, r in MONITOR.seen.items()
            if r.typ.startswith(("kubernetes:networking.istio.io", "kubernetes:security.istio.io"))
        }
        assert crs == expected
        assert MONITOR.seen["virtualservice-default-reviews"].inputs["spec"]["http"][1]["route"][0]["weight"] == 50
        deployed = {
            r.inputs["metadata"]["name"] for r in MONITOR.seen.values() if r.typ == "kubernetes:apps/v1:Deployment"
        }
        assert deployed == workloads

    return _settled(d, check)


@pulumi_test
def test_outputs_and_the_kubeconfig_output_is_secret() -> Any:
    exported: dict[str, Any] = {}

    def record(name: str, value: Any) -> None:
        exported[name] = value

    original = pulumi.export
    try:
        pulumi.export = record
        _run(DEV)
    finally:
        pulumi.export = original
    assert set(exported) == {
        "ingress_url",
        "kubeconfig",
        "policy_env",
        "policy_revision",
        "istio_version",
        "sample_image",
    }
    assert exported["ingress_url"] == "http://localhost:8080"
    assert "manifests sha256:" in exported["policy_revision"]

    def secret(is_secret: bool) -> None:
        assert is_secret, "the kubeconfig output must be a secret"

    return pulumi.Output.from_input(exported["kubeconfig"].is_secret()).apply(secret)


def test_analysis_errors_stop_the_deployment(tmp_path: Path) -> None:
    from mesh.errors import AnalysisFailed

    pkg = tmp_path / "bad"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from mesh.api import MeshConfig, VirtualService, helpers as h\n"
        "def build(env):\n"
        "    return MeshConfig().add(VirtualService(name='x', hosts=['x'], http=[h.split('x', {'a': 0, 'b': 0})]))\n"
    )
    MONITOR.seen.clear()
    with pytest.raises(AnalysisFailed):
        program(DEV, policies_dir=pkg, home=tmp_path)
    assert MONITOR.seen == {}


# --- the reconciler in the cluster, Istio's add-ons, the plug-in CA ------------------------------------------------

RECONCILER = ReconcilerSettings(repo="git://172.30.0.1/policies.git", webhook_secret="s3cret-hook", ref="main")
CI_FULL = replace(CI, reconciler=RECONCILER, addons=ADDONS)
PEMS = {"ca-cert.pem": "CA", "ca-key.pem": "KEY", "root-cert.pem": "ROOT", "cert-chain.pem": "CHAIN"}


@pulumi_test
def test_the_reconciler_runs_in_the_cluster_against_the_kubernetes_target() -> Any:
    d = _run(CI_FULL)

    def check() -> None:
        dep = MONITOR.seen["deployment-meshops-system-meshops-reconciler"]
        (container,) = dep.inputs["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[:3] == ["reconcile", "--target", "kubernetes"]
        assert args[args.index("--repo") + 1] == RECONCILER.repo and args[args.index("--env") + 1] == "e2e"
        assert args[args.index("--webhook-secret-file") + 1] == "/etc/meshops/webhook/secret"
        assert container["image"].startswith("meshops/reconciler:")
        assert dep.inputs["spec"]["template"]["spec"]["serviceAccountName"] == "meshops-reconciler"
        deps = MONITOR.deps("deployment-meshops-system-meshops-reconciler")
        assert {"reconciler-image", "secret-meshops-system-webhook", "namespace-meshops-system", "istiod"} <= deps
        assert "virtualservice-default-reviews" in deps  # it starts from the policies the stack deployed
        svc = MONITOR.seen["service-meshops-system-meshops-reconciler"].inputs["spec"]
        assert svc["ports"][0]["port"] == 9900
        assert MONITOR.seen["namespace-meshops-system"].inputs["metadata"]["labels"]["istio-injection"] == "disabled"
        for name in MONITOR.seen:
            if "meshops-reconciler" in name or "meshops-system" in name:
                assert MONITOR.provider_of(name) == "kubernetes", name

    return _settled(d, check)


@pulumi_test
def test_the_webhook_secret_reaches_the_engine_only_as_a_secret() -> Any:
    d = _run(CI_FULL)

    def check() -> None:
        secret = MONITOR.seen["secret-meshops-system-webhook"]
        assert secret.typ == "kubernetes:core/v1:Secret"
        assert "stringData" in secret.secret_inputs, "the webhook secret went to the engine in clear"
        assert MONITOR.deps("secret-meshops-system-webhook") == {"namespace-meshops-system"}

    return _settled(d, check)


@pulumi_test
def test_reconciler_rbac_is_istio_config_kinds_and_pods_of_managed_namespaces_only() -> Any:
    d = _run(CI_FULL)

    def check() -> None:
        (rule,) = MONITOR.seen["clusterrole-meshops-reconciler"].inputs["rules"]
        assert set(rule["apiGroups"]) == {"networking.istio.io", "security.istio.io"}
        assert set(rule["resources"]) == {
            "gateways",
            "virtualservices",
            "destinationrules",
            "peerauthentications",
            "authorizationpolicies",
        }
        binding = MONITOR.seen["clusterrolebinding-meshops-reconciler"].inputs
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "meshops-reconciler", "namespace": "meshops-system"}
        ]
        roles = {
            r.inputs["metadata"]["namespace"]: r.inputs["rules"]
            for r in MONITOR.seen.values()
            if r.typ == "kubernetes:rbac.authorization.k8s.io/v1:Role"
        }
        # the e2e policies have objects in istio-system too: one Role there holds both sets of rules
        assert set(roles) == {"default", "legacy", "istio-system"}
        assert {res for rule in roles["istio-system"] for res in rule["resources"]} == {
            "pods",
            "pods/exec",
            "deployments",
            "pods/proxy",
        }
        names = [
            (r.typ, r.inputs["metadata"].get("namespace"), r.inputs["metadata"]["name"])
            for r in MONITOR.seen.values()
            if "metadata" in r.inputs
        ]
        assert len(names) == len(set(names)), "two resources would be the same Kubernetes object"
        assert all("secrets" not in rule["resources"] for rules in roles.values() for rule in rules)

    return _settled(d, check)


def test_no_reconciler_unless_the_stack_asks_and_an_existing_cluster_needs_an_image() -> None:
    assert not any("reconciler" in n for n in _run(CI).resources)
    with pytest.raises(ValueError, match="meshops:reconcilerImage is required"):
        _run(replace(PROD, reconciler=RECONCILER))


@pulumi_test
def test_an_existing_cluster_runs_the_reconciler_image_it_names() -> Any:
    d = _run(replace(PROD, reconciler=replace(RECONCILER, image="ghcr.io/acme/meshops-reconciler:1.0")))

    def check() -> None:
        assert "reconciler-image" not in MONITOR.seen
        dep = MONITOR.seen["deployment-meshops-system-meshops-reconciler"]
        assert dep.inputs["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/meshops-reconciler:1.0"

    return _settled(d, check)


@pulumi_test
def test_addons_are_istios_manifests_of_the_pinned_version_after_istiod() -> Any:
    d = _run(CI_FULL)

    def check() -> None:
        for addon in ADDONS:
            r = MONITOR.seen[f"addon-{addon}"]
            assert r.typ == "kubernetes:yaml/v2:ConfigFile"
            assert r.inputs["file"] == (
                f"https://raw.githubusercontent.com/istio/istio/{ISTIO_VERSION}/samples/addons/{addon}.yaml"
            )
            assert MONITOR.deps(f"addon-{addon}") == {"istiod"}
            assert MONITOR.provider_of(f"addon-{addon}") == "kubernetes"
        tracing = MONITOR.seen["istiod"].inputs["values"]["meshConfig"]
        assert tracing["enableTracing"] is True and tracing["defaultConfig"]["tracing"]["sampling"] == 100.0

    return _settled(d, check)


@pulumi_test
def test_no_addons_and_default_tracing_unless_asked() -> Any:
    d = _run(CI)

    def check() -> None:
        assert not any(n.startswith("addon-") for n in MONITOR.seen)
        assert MONITOR.seen["istiod"].inputs["values"]["meshConfig"] == {"accessLogFile": "/dev/stdout"}

    return _settled(d, check)


@pulumi_test
def test_the_plug_in_ca_is_istios_cacerts_secret_before_istiod_starts() -> Any:
    d = _run(replace(PROD, ca_certs=PEMS))

    def check() -> None:
        ca = MONITOR.seen["secret-istio-system-cacerts"]
        assert ca.inputs["metadata"]["name"] == "cacerts" and ca.inputs["metadata"]["namespace"] == "istio-system"
        assert "stringData" in ca.secret_inputs, "the CA key went to the engine in clear"
        assert set(ca.inputs["stringData"]["value"]) == set(PEMS)  # the whole map went as one secret value
        assert MONITOR.deps("secret-istio-system-cacerts") == {"istio-base"}
        assert MONITOR.deps("istiod") == {"istio-base", "secret-istio-system-cacerts"}
        assert MONITOR.provider_of("secret-istio-system-cacerts") == "kubernetes"

    return _settled(d, check)


# --- headless services and gRPC ports ------------------------------------------------------------------------------


def _policies_with(tmp_path: Path, source: str) -> Path:
    pkg = tmp_path / "pol"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(source)
    return pkg


HEADLESS_POLICIES = (
    "from mesh.api import MeshConfig, Service, ServicePort, Version\n"
    "def build(env):\n"
    "    app = ['{python}', '-m', 'mesh.sampleapp']\n"
    "    db = Service(name='db', headless=True, versions=[Version(name='v1', replicas=2, command=app, image='i:1')])\n"
    "    grpc = Service(name='greeter', ports=[ServicePort(number=9090, name='grpc-echo', protocol='grpc')],\n"
    "                   versions=[Version(name='v1', command=app, image='i:1')])\n"
    "    return MeshConfig().add(db, grpc)\n"
)


@pulumi_test
def test_a_headless_service_reaches_the_engine_without_a_cluster_ip_with_a_stateful_set_and_grpc_ports_typed(
    tmp_path: Path,
) -> Any:
    MONITOR.seen.clear()
    d = program(DEV, policies_dir=_policies_with(tmp_path, HEADLESS_POLICIES), home=tmp_path)

    def check() -> None:
        db = MONITOR.seen["service-default-db"].inputs["spec"]
        greeter = MONITOR.seen["service-default-greeter"].inputs["spec"]
        assert db["clusterIP"] == "None"
        stateful = MONITOR.seen["statefulset-default-db-v1"]  # pods db-v1-0, db-v1-1: the names the mesh routes
        assert stateful.typ == "kubernetes:apps/v1:StatefulSet"
        assert stateful.inputs["spec"]["serviceName"] == "db" and stateful.inputs["spec"]["replicas"] == 2
        assert "deployment-default-db-v1" not in MONITOR.seen
        assert "clusterIP" not in greeter  # Kubernetes allocates a VIP
        assert greeter["ports"] == [
            {"name": "grpc-echo", "port": 9090, "targetPort": 9090, "protocol": "TCP", "appProtocol": "grpc"}
        ]

    return _settled(d, check)


@pulumi_test
def test_a_route_scoped_rate_limit_reaches_the_engine_as_istios_envoyfilters(tmp_path: Path) -> Any:
    """A RateLimit on one gateway route, bucketed per `x-user`: the engine receives the limit's HTTP_ROUTE patch
    (Istio's route name, the per-route config the local mesh pushes) and the shared filter insertion."""
    pkg = tmp_path / "limited"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import policies\n"
        "from mesh.api import MeshConfig, RateLimit, RateLimitDescriptor, RouteSelector, TokenBucket, VirtualService\n"
        "from mesh.api import WorkloadSelector\n"
        "def build(env):\n"
        "    base = policies.build(env)\n"
        "    out = []\n"
        "    for r in base.resources:\n"
        "        if isinstance(r, VirtualService) and r.name == 'bookinfo':\n"
        "            r = r.model_copy(update={'http': [x.model_copy(update={'name': n})\n"
        "                                              for x, n in zip(r.http, ('pages', 'static'))]})\n"
        "        out.append(r)\n"
        "    limit = RateLimit(name='pages', namespace='istio-system',\n"
        "        workload_selector=WorkloadSelector(match_labels={'istio': 'ingressgateway'}),\n"
        "        token_bucket=TokenBucket(max_tokens=5, fill_interval='1m'),\n"
        "        routes=[RouteSelector(virtual_service='default/bookinfo', route='pages')],\n"
        "        descriptors=[RateLimitDescriptor(header='x-user', token_bucket=TokenBucket(max_tokens=3))])\n"
        "    return MeshConfig(services=list(base.services), resources=[*out, limit])\n"
    )
    MONITOR.seen.clear()
    d = program(DEV, policies_dir=pkg, home=tmp_path)

    def check() -> None:
        limit = MONITOR.seen["envoyfilter-istio-system-ratelimit-pages"]
        assert limit.typ == "kubernetes:networking.istio.io/v1alpha3:EnvoyFilter"
        assert "istiod" in MONITOR.deps("envoyfilter-istio-system-ratelimit-pages")
        spec = limit.inputs["spec"]
        assert spec["workloadSelector"] == {"labels": {"istio": "ingressgateway"}}
        (patch,) = spec["configPatches"]
        assert patch["applyTo"] == "HTTP_ROUTE" and patch["match"]["context"] == "GATEWAY"
        assert patch["match"]["routeConfiguration"] == {"vhost": {"route": {"name": "pages"}}}
        per_route = patch["patch"]["value"]["typed_per_filter_config"]["meshops.route_local_ratelimit"]
        assert per_route["token_bucket"]["max_tokens"] == 5
        assert per_route["descriptors"] == [
            {
                "entries": [{"key": "x-user"}],
                "token_bucket": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "1s"},
            }
        ]
        shared = MONITOR.seen["envoyfilter-istio-system-meshops-route-ratelimit"].inputs["spec"]
        (insert,) = shared["configPatches"]
        assert insert["applyTo"] == "HTTP_FILTER" and insert["patch"]["operation"] == "INSERT_BEFORE"
        assert insert["patch"]["value"]["name"] == "meshops.route_local_ratelimit"

    return _settled(d, check)


# --- the whole graph, as a snapshot ----------------------------------------------------------------------------------

GRAPH = Path(__file__).with_name("program_graph.json")
# policies of its own, so a change to the sample's policies does not move the recorded graph: two namespaces, an
# ingress, subsets, a split and an ALLOW policy (each kind of resource the program registers for policies)
GRAPH_POLICIES = """\
from mesh.api import MeshConfig, Service, Version, VirtualService, helpers as h

def _v(name):
    return Version(name=name, image="meshops/sampleapp:0.1.0", command=["{python}", "-m", "mesh.sampleapp"])

front = Service(name="front", versions=[_v("v1")])
back = Service(name="back", namespace="shop", versions=[_v("v1"), _v("v2")])

def build(env):
    split = VirtualService(name="back", namespace="shop", hosts=["back"], http=[h.split("back", {"v1": 90, "v2": 10})])
    return MeshConfig().add(
        front, back, *h.ingress("shop", hosts=["shop.local"], routes={"/": "front"}),
        h.subsets_by_version(back), split, h.allow_only_from(back, front),
    )
"""
GRAPH_STACKS = {
    "dev": DEV,
    "ci-full": CI_FULL,
    "existing-full": replace(
        PROD, ca_certs=PEMS, addons=ADDONS, reconciler=replace(RECONCILER, image="ghcr.io/acme/meshops-reconciler:1.0")
    ),
}


def _graph() -> list[dict[str, Any]]:
    """(type, name, parent, provider, depends_on, delete-before-replace, input fields) of every resource registered,
    by name (registration order follows Output resolution); inputs' values are left out (paths and image digests
    differ per checkout)."""

    def parent(urn: str) -> str:
        return "" if not urn or "::pulumi:pulumi:Stack::" in urn else MONITOR.name_of(urn)

    return [
        {
            "type": r.typ,
            "name": name,
            "parent": parent(r.parent),
            "provider": MONITOR.provider_of(name),
            "depends_on": sorted(MONITOR.deps(name)),
            "delete_before_replace": r.delete_before_replace,
            "inputs": sorted(r.inputs),
        }
        for name, r in sorted(MONITOR.seen.items())
    ]


@pytest.mark.parametrize("stack", sorted(GRAPH_STACKS))
@pulumi_test
def test_the_registered_graph_is_the_recorded_one(stack: str) -> Any:
    """Refactoring the program keeps every resource, its parent, provider and dependencies. To record an intended
    change: MESH_UPDATE_PROGRAM_GRAPH=1 pytest tests/unit/kubernetes/test_program.py -k registered_graph."""
    pkg = HOME / "graph_policies"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(GRAPH_POLICIES)
    MONITOR.seen.clear()
    d = program(GRAPH_STACKS[stack], policies_dir=pkg, home=HOME)

    def check() -> None:
        recorded = json.loads(GRAPH.read_text()) if GRAPH.exists() else {}
        if os.environ.get("MESH_UPDATE_PROGRAM_GRAPH"):
            GRAPH.write_text(json.dumps({**recorded, stack: _graph()}, indent=1, sort_keys=True) + "\n")
            return
        assert stack in recorded, f"{GRAPH.name} has no {stack!r}: record it (see this test's docstring)"
        assert _graph() == recorded[stack], "the registered graph changed; if intended, record it (docstring)"

    return _settled(d, check)

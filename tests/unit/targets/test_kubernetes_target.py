"""KubernetesTarget against a fake API server (real HTTP, the official client): server-side apply with meshops'
field manager, prune by label, the wait for istiod and every proxy, status, proxy status and the live config.
The live run is the kind-e2e workflow's job; nothing here claims one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mesh.api import AuthorizationPolicy, MeshConfig, VirtualService, helpers
from mesh.compile import build_policies, render_istio
from mesh.errors import TargetError
from mesh.targets.base import Target
from mesh.targets.kubernetes.target import KubernetesTarget
from tests.unit.targets.fakeapi import FakeApiServer, app_pod, istiod_pod, running

SYNCED = [{"proxy": "productpage-v1-abc.default", "proxy_type": "sidecar", "cluster_sent": "n1", "cluster_acked": "n1"}]


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    fake = FakeApiServer(pods={"istio-system": [istiod_pod()]})
    fake.istiod["syncz"] = lambda: SYNCED
    fake.istiod["configz"] = lambda: [
        {"kind": k, "metadata": o["metadata"]} for (_, _, _), o in fake.objects.items() for k in [o["kind"]]
    ]
    with running(fake):
        yield fake


def target_for(api: FakeApiServer, tmp_path: Path, config: MeshConfig | None = None) -> KubernetesTarget:
    return KubernetesTarget(
        "e2e",
        kubeconfig=str(api.kubeconfig(tmp_path / "kubeconfig")),
        config=config,
        propagation_timeout=5.0,
        propagation_poll=0.01,
    )


def seed(api: FakeApiServer, config: MeshConfig) -> None:
    plural = {"VirtualService": "virtualservices", "AuthorizationPolicy": "authorizationpolicies"}
    for m in render_istio(config):
        if m["kind"] in plural:
            meta = {**m["metadata"], "labels": {"app.kubernetes.io/managed-by": "meshops"}, "resourceVersion": "7"}
            api.add(plural[m["kind"]], {**m, "metadata": meta})


def test_it_is_a_target(api: FakeApiServer, tmp_path: Path) -> None:
    assert isinstance(target_for(api, tmp_path), Target)


def test_apply_is_server_side_with_meshops_field_manager_prunes_what_was_dropped_then_waits(
    api: FakeApiServer, tmp_path: Path
) -> None:
    config = build_policies("e2e")
    seed(api, config)
    vs = VirtualService(name="reviews", hosts=["reviews"], http=[helpers.split("reviews", {"v1": 100})])
    new = MeshConfig(
        services=config.services,
        resources=[r for r in config.resources if r.kind != "AuthorizationPolicy" and r.key != vs.key] + [vs],
    )
    polls: Iterator[Any] = iter([[], [{"metadata": {"resourceVersion": "101"}}]])  # caught up on the third poll
    configz = api.istiod["configz"]

    def catching_up() -> Any:
        answer = next(polls, None)
        return configz() if answer is None else answer

    api.istiod["configz"] = catching_up
    target = target_for(api, tmp_path, config)

    result = target.apply(new)

    patches = [r for r in api.requests if r.method == "PATCH"]
    assert len(patches) == len(render_istio(new))
    for p in patches:
        assert p.query["fieldManager"] == ["meshops"] and p.query["force"] == ["true"]
        assert p.headers["Content-Type"].startswith("application/apply-patch+yaml")
        assert p.body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "meshops"
    deleted = {tuple(r.path.rsplit("/", 3)[-3:]) for r in api.requests if r.method == "DELETE"}
    assert ("default", "authorizationpolicies", "details-viewer") in deleted
    assert deleted == {("default", "authorizationpolicies", a.name) for a in config.of_kind(AuthorizationPolicy)}
    assert ("virtualservices", "default", "reviews") in api.objects  # changed, not pruned
    assert "~ VirtualService default/reviews" in {f"{c.op} {c.ref}" for c in result.diff}
    assert "- AuthorizationPolicy default/details-viewer" in {f"{c.op} {c.ref}" for c in result.diff}
    assert result.proxies == {"productpage-v1-abc.default": "SYNCED"}
    assert len([r for r in api.requests if r.path.endswith("debug/configz")]) >= 3
    assert target.config is new


def test_a_dry_run_changes_nothing(api: FakeApiServer, tmp_path: Path) -> None:
    config = build_policies("e2e")
    seed(api, config)
    before = dict(api.objects)
    result = target_for(api, tmp_path, config).apply(MeshConfig(services=config.services), dry_run=True)
    assert api.objects == before and not [r for r in api.requests if r.method == "DELETE"]
    assert {c.op for c in result.diff} == {"-"} and result.dry_run


def test_propagation_wait_gives_up_with_a_clear_error(api: FakeApiServer, tmp_path: Path) -> None:
    api.istiod["configz"] = lambda: []
    cluster = target_for(api, tmp_path).cluster
    with pytest.raises(TargetError, match="istiod did not see the applied config within 1s"):
        cluster.wait_propagated({"42"}, timeout=1.0, poll=0.05)


def test_proxies_must_stay_synced_for_three_polls(api: FakeApiServer, tmp_path: Path) -> None:
    stale = [{**SYNCED[0], "cluster_acked": "n0"}]
    answers = iter([SYNCED, stale, SYNCED, SYNCED])
    api.istiod["syncz"] = lambda: next(answers, SYNCED)
    cluster = target_for(api, tmp_path).cluster
    cluster.wait_propagated(set(), timeout=5.0, poll=0.01)
    assert len([r for r in api.requests if r.path.endswith("debug/syncz")]) == 5  # 1 synced, 1 stale (reset), 3 synced


def test_status_proxy_status_and_the_live_config_read_the_cluster(api: FakeApiServer, tmp_path: Path) -> None:
    config = build_policies("e2e")
    seed(api, config)
    api.istiod["syncz"] = lambda: [*SYNCED, {"proxy": "gw.istio-ingress", "proxy_type": "router", "cluster_sent": "n2"}]
    target = target_for(api, tmp_path, config)
    st = target.status()
    assert st.running and st.target == "kubernetes" and st.env == "e2e"
    assert [(p.proxy, p.kind, p.state) for p in target.proxy_status()] == [
        ("gw.istio-ingress", "gateway", "STALE"),
        ("productpage-v1-abc.default", "sidecar", "SYNCED"),
    ]
    live = target.live_config()
    want = {r.key for r in config.resources if r.kind in ("VirtualService", "AuthorizationPolicy")}
    assert {r.key for r in live.resources} == want
    assert all(r.source is not None and r.source.file == "cluster:e2e" for r in live.resources)


def test_status_without_istiod_is_not_running_with_the_reason(tmp_path: Path) -> None:
    with running(FakeApiServer()) as api:
        st = target_for(api, tmp_path).status()
    assert not st.running and "no running istiod" in st.detail


def test_data_path_reads_pods_and_restarts_from_the_api(api: FakeApiServer, tmp_path: Path) -> None:
    api.pods["default"] = [app_pod("reviews-v1-x", "reviews", 1), app_pod("reviews-v2-y", "reviews", 2)]
    path = target_for(api, tmp_path, build_policies("e2e")).data_path()
    assert path.pods("reviews") == ["reviews-v1-x", "reviews-v2-y"]
    assert path.restarts() == 3
    assert path.gateway_identity == "spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway"


def test_the_cli_dispatches_status_proxy_status_and_apply_to_kubernetes(
    api: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mesh.cli import cli, commands, meshcmds  # noqa: F401  (registers commands)

    monkeypatch.setenv("MESH_KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
    runner = CliRunner()
    st = runner.invoke(cli, ["status", "--target", "kubernetes", "-o", "json"])
    assert st.exit_code == 0, st.output
    assert json.loads(st.output)["running"] is True
    ps = runner.invoke(cli, ["proxy-status", "--target", "kubernetes"])
    assert ps.exit_code == 0 and "productpage-v1-abc.default" in ps.output and "SYNCED" in ps.output
    dry = runner.invoke(cli, ["apply", "--target", "kubernetes", "--env", "e2e", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "+ VirtualService default/reviews" in dry.output and "nothing was pushed" in dry.output
    assert not [r for r in api.requests if r.method == "PATCH" and "All" not in r.query.get("dryRun", [])]


def test_an_unreachable_cluster_is_a_target_error(tmp_path: Path) -> None:
    target = KubernetesTarget("e2e", kubeconfig=str(tmp_path / "missing"))
    with pytest.raises(TargetError, match="kubeconfig"):
        target.proxy_status()


def test_inside_a_pod_without_a_kubeconfig_the_target_uses_the_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-cluster reconciler: API server from KUBERNETES_SERVICE_HOST, the pod's token and CA."""
    from kubernetes.config import incluster_config

    (tmp_path / "token").write_text("sa-token-123")
    (tmp_path / "ca.crt").write_text("not checked until connecting")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.delenv("MESH_KUBECONFIG", raising=False)
    configuration = KubernetesTarget().cluster.api_client.configuration
    assert configuration.host == "https://10.96.0.1:443"
    assert configuration.get_api_key_with_prefix("BearerToken") == "bearer sa-token-123"
    # a kubeconfig, when named, still wins (the same image run by hand against another cluster)
    monkeypatch.setenv("MESH_KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(TargetError, match="no usable kubeconfig"):
        KubernetesTarget().cluster  # noqa: B018


def test_mesh_reconcile_accepts_the_kubernetes_target() -> None:
    from mesh.cli import cli, reconcile  # noqa: F401  (registers the command)

    out = CliRunner().invoke(cli, ["reconcile", "--help"]).output
    assert "[local|kubernetes]" in out

"""The kind harness's own logic, offline, with a fake kubectl (the live run is the kind-e2e workflow's job):
pod/workload mapping, exec replies, pruning on apply, and the propagation wait."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from mesh.api import MeshConfig, VirtualService, helpers
from mesh.compile import build_policies
from mesh.errors import TargetError
from mesh.harness.kind import ExecClient, KindMeshUnderTest


class FakeKubectl:
    def __init__(self, replies: dict[str, Any]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, ...]] = []
        self.inputs: list[str | None] = []

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        self.calls.append(args)
        self.inputs.append(input)
        for prefix, reply in self.replies.items():
            if " ".join(args).startswith(prefix):
                return reply(args, input) if callable(reply) else reply
        raise AssertionError(f"unexpected kubectl {args}")


def mesh_with(fake: FakeKubectl, config: MeshConfig | None = None) -> KindMeshUnderTest:
    m = KindMeshUnderTest.__new__(KindMeshUnderTest)
    m.config, m.kubectl, m.ingress_url = config or build_policies("e2e"), fake, "http://localhost:8080"  # type: ignore[assignment]
    return m


def test_pods_and_services_map_to_deployments() -> None:
    m = mesh_with(FakeKubectl({}))
    assert m._deployment("reviews-v2-0") == "deploy/reviews-v2"
    assert m._deployment("productpage") == "deploy/productpage-v1"
    with pytest.raises(KeyError):
        m._deployment("nothing")


def test_exec_client_turns_replies_into_replies_and_failures_into_connection_errors() -> None:
    ok = json.dumps({"status": 200, "headers": {"a": "b"}, "body": '{"pod": "x"}', "elapsed": 0.01})
    fake = FakeKubectl({"exec -n default deploy/productpage-v1 -c productpage": ok})
    r = ExecClient(fake, "default", "deploy/productpage-v1").get("http://echo:9080/", {"x": "1"})  # type: ignore[arg-type]
    assert (r.status, r.json["pod"]) == (200, "x")
    assert fake.calls[0][-3:-1] == ("GET", "http://echo:9080/")
    fail = FakeKubectl({"exec": json.dumps({"error": "ConnectionResetError: reset by peer", "elapsed": 0.0})})
    with pytest.raises(requests.ConnectionError, match="reset by peer"):
        ExecClient(fail, "legacy", "deploy/legacy-client", "http://echo.default.svc.cluster.local:9080").get("/")  # type: ignore[arg-type]
    assert fail.calls[0][fail.calls[0].index("-c") + 1] == "client"


def test_apply_prunes_what_the_new_config_dropped_then_waits_for_istiod() -> None:
    config = build_policies("e2e")
    vs = VirtualService(name="reviews", hosts=["reviews"], http=[helpers.split("reviews", {"v1": 100})])
    new = MeshConfig(
        services=config.services,
        resources=[r for r in config.resources if r.kind != "AuthorizationPolicy" and r.key != vs.key] + [vs],
    )
    applied = {
        "kind": "List",
        "items": [
            {"kind": r.kind, "metadata": {"namespace": r.namespace, "name": r.name, "resourceVersion": str(100 + i)}}
            for i, r in enumerate(new.resources)
        ],
    }
    existing = {
        "items": [
            {"kind": "AuthorizationPolicy", "metadata": {"namespace": "default", "name": "details-viewer"}},
            {"kind": "VirtualService", "metadata": {"namespace": "default", "name": "reviews"}},
        ]
    }
    polls = iter(["[]", json.dumps([{"resourceVersion": "100"}])])
    configz = json.dumps([{"resourceVersion": str(100 + i)} for i in range(len(new.resources))])

    def istiod(args: tuple[str, ...], _: str | None) -> str:
        if args[-1] == "/debug/configz":
            return next(polls, configz)
        return '[{"proxy": "x", "cluster_sent": "1", "cluster_acked": "1"}]'

    fake = FakeKubectl(
        {
            "apply -o json -f -": json.dumps(applied),
            "get gateways.networking.istio.io": json.dumps(existing),
            "delete authorizationpolicy details-viewer -n default": "deleted",
            "exec -n istio-system deploy/istiod": istiod,
        }
    )
    m = mesh_with(fake, config)
    m.apply(new)
    assert ("delete", "authorizationpolicy", "details-viewer", "-n", "default") in fake.calls
    assert not any(c[:2] == ("delete", "virtualservice") for c in fake.calls)
    sent = fake.inputs[0] or ""
    assert "app.kubernetes.io/managed-by: meshops" in sent
    assert m.config is new


def test_propagation_wait_gives_up_with_a_clear_error() -> None:
    fake = FakeKubectl(
        {"exec -n istio-system deploy/istiod": lambda args, _: "[]" if args[-1] == "/debug/configz" else "STALE"}
    )
    m = mesh_with(fake)
    with pytest.raises(TargetError, match="istiod did not see the applied config within 1s"):
        m._wait_propagated({"42"}, timeout=1.0)

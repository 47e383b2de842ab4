"""The Kubernetes data path's own logic, offline, with a fake kubectl (the live run is the kind-e2e workflow's job):
pod/workload mapping and exec replies. (Pruning on apply and the propagation wait: test_kubernetes_target.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from mesh.compile import build_policies
from mesh.targets.kubernetes.datapath import ExecClient, KubernetesDataPath


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
                return reply(args, input) if callable(reply) else str(reply)
        raise AssertionError(f"unexpected kubectl {args}")


def path_with(fake: FakeKubectl) -> KubernetesDataPath:
    return KubernetesDataPath(build_policies("e2e"), cluster=None, ingress_url="http://localhost:8080", kubectl=fake)  # type: ignore[arg-type]


def test_pods_and_services_map_to_deployments() -> None:
    m = path_with(FakeKubectl({}))
    assert m.deployment("reviews-v2-0") == "deploy/reviews-v2"
    assert m.deployment("productpage") == "deploy/productpage-v1"
    with pytest.raises(KeyError):
        m.deployment("nothing")


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


def test_from_pod_and_plaintext_clients_exec_in_the_right_pods() -> None:
    ok = json.dumps({"status": 200, "headers": {}, "body": "{}", "elapsed": 0.0})
    fake = FakeKubectl({"exec": ok})
    m = path_with(fake)
    m.from_pod("reviews-v2-0").get("http://ratings:9080/")
    m.plaintext_to("ratings-v1-0").get("/ratings/0")
    assert fake.calls[0][:4] == ("exec", "-n", "default", "deploy/reviews-v2")
    assert fake.calls[1][:4] == ("exec", "-n", "legacy", "deploy/legacy-client")
    assert "http://ratings.default.svc.cluster.local:9080/ratings/0" in fake.calls[1]

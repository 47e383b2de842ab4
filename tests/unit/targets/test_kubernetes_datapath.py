"""The Kubernetes data path's own logic, offline (the live run is the kind-e2e workflow's job): pod/workload mapping,
and the long-lived in-pod client driven through a fake `kubectl` that runs the exec'd command on this machine, so
the client loop, its stream protocol, restarts and reaping run for real against a local HTTP server.
(Pruning on apply and the propagation wait: test_kubernetes_target.py.)"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

import pytest
import requests

from mesh.compile import build_policies
from mesh.errors import TargetError
from mesh.targets.kubernetes import datapath
from mesh.targets.kubernetes.datapath import ExecClient, ExecSession, Kubectl, KubernetesDataPath

FAKE_KUBECTL = """#!{python}
import os, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(" ".join(args[: args.index("--")]) + "\\n")
cmd = args[args.index("--") + 1 :]
os.execv(sys.executable, [sys.executable, *cmd[1:]])
"""


class Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(2)
        if self.path.startswith("/delay"):
            time.sleep(0.5)
        body = json.dumps({"path": self.path, "host": self.headers["Host"], "x": self.headers.get("x")}).encode()
        self.send_response(503 if self.path.startswith("/fail") else 200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kubectl:
    script = tmp_path / "kubectl"
    script.write_text(FAKE_KUBECTL.format(python=sys.executable, log=str(tmp_path / "execs.log")))
    script.chmod(0o755)
    monkeypatch.setenv("MESH_KUBECTL", str(script))
    monkeypatch.delenv("MESH_KUBECONFIG", raising=False)
    return Kubectl()


def execs(kubectl: Kubectl) -> list[str]:
    log = Path(kubectl.binary).parent / "execs.log"
    return log.read_text().splitlines() if log.exists() else []


def path_with(kubectl: Kubectl) -> KubernetesDataPath:
    return KubernetesDataPath(build_policies("e2e"), cluster=None, ingress_url="http://localhost:8080", kubectl=kubectl)  # type: ignore[arg-type]


def test_pods_and_services_map_to_deployments(kubectl: Kubectl) -> None:
    m = path_with(kubectl)
    assert m.deployment("reviews-v2-0") == "deploy/reviews-v2"
    assert m.deployment("productpage") == "deploy/productpage-v1"
    with pytest.raises(KeyError):
        m.deployment("nothing")


def test_many_requests_share_one_exec_session(kubectl: Kubectl, server: str) -> None:
    session = ExecSession(kubectl, "default", "deploy/productpage-v1", "productpage")
    client = ExecClient(session, server)
    try:
        replies = [client.get(f"/n/{i}", {"x": str(i)}, host="echo") for i in range(40)]
        assert [r.json["path"] for r in replies] == [f"/n/{i}" for i in range(40)]
        assert {r.json["host"] for r in replies} == {"echo"}
        assert replies[7].json["x"] == "7"
        assert client.get("/fail").status == 503  # an HTTP error status is a reply, not a failure
        assert execs(kubectl) == ["exec -i -n default deploy/productpage-v1 -c productpage"]
        assert session.starts == 1
    finally:
        session.close()


def test_a_batch_is_one_round_trip_with_n_replies(kubectl: Kubectl, server: str) -> None:
    session = ExecSession(kubectl, "default", "deploy/productpage-v1", "productpage")
    try:
        replies = ExecClient(session, server).batch("GET", "/split", n=25)
        assert len(replies) == 25 and all(r.status == 200 for r in replies)
        assert all(r.elapsed > 0 for r in replies)
        assert session.starts == 1
    finally:
        session.close()


def test_concurrent_callers_share_the_stream_and_get_their_own_replies(kubectl: Kubectl, server: str) -> None:
    """Verification sends 8 at a time: 8 requests of 0.5 s each finish together, not one after another (4 s)."""
    session = ExecSession(kubectl, "default", "deploy/productpage-v1", "productpage")
    client = ExecClient(session, server)
    try:
        client.get("/warm")
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            paths = list(pool.map(lambda i: client.get(f"/delay/{i}").json["path"], range(8)))
        assert time.monotonic() - t0 < 2.0
        assert paths == [f"/delay/{i}" for i in range(8)]
        assert session.starts == 1
    finally:
        session.close()


def test_a_failed_request_raises_and_the_session_keeps_serving(kubectl: Kubectl, server: str) -> None:
    session = ExecSession(kubectl, "legacy", "deploy/legacy-client", "client")
    client = ExecClient(session)
    try:
        with pytest.raises(requests.ConnectionError, match=r"URLError|Connection refused"):
            client.get("http://127.0.0.1:1/")
        assert client.get(server + "/after").json["path"] == "/after"
        assert session.starts == 1
    finally:
        session.close()


def test_a_request_slower_than_the_timeout_fails_inside_the_pod(
    kubectl: Kubectl, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datapath, "REQUEST_TIMEOUT", 0.3)
    session = ExecSession(kubectl, "default", "deploy/productpage-v1", "productpage")
    try:
        t0 = time.monotonic()
        with pytest.raises(requests.ConnectionError, match="timed out"):
            ExecClient(session, server).get("/slow")
        assert time.monotonic() - t0 < 1.9
    finally:
        session.close()


def test_a_dead_exec_stream_is_restarted_and_closed_sessions_are_reaped(kubectl: Kubectl, server: str) -> None:
    session = ExecSession(kubectl, "default", "deploy/productpage-v1", "productpage")
    client = ExecClient(session, server)
    try:
        client.get("/one")
        proc = session._proc
        assert proc is not None
        proc.kill()  # the pod restarted, or the API server dropped the stream
        proc.wait()
        assert client.get("/two").json["path"] == "/two"
        assert session.starts == 2 and len(execs(kubectl)) == 2
        live = session._proc
        assert live is not None
    finally:
        session.close()
    assert live.poll() is not None  # killed and waited for: no orphan kubectl


def test_from_pod_and_plaintext_clients_exec_in_the_right_containers(kubectl: Kubectl, server: str) -> None:
    m = path_with(kubectl)
    try:
        a, b = m.from_pod("reviews-v2-0"), m.from_pod("reviews-v2")
        assert isinstance(a, ExecClient) and isinstance(b, ExecClient) and a.session is b.session
        a.get(server + "/")
        plain = m.plaintext_to("ratings-v1-0")
        assert isinstance(plain, ExecClient)
        assert plain.base_url == "http://ratings.default.svc.cluster.local:9080"
        plain.session.send("GET", server + "/", {})
        assert execs(kubectl) == [
            "exec -i -n default deploy/reviews-v2 -c reviews",
            "exec -i -n legacy deploy/legacy-client -c client",
        ]
    finally:
        m.close()


def test_missing_kubectl_is_an_actionable_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESH_KUBECTL", str(tmp_path / "no-kubectl"))
    with pytest.raises(TargetError, match="kubectl not found"):
        ExecSession(Kubectl(), "default", "deploy/x-v1", "x").send("GET", "http://x/", {})

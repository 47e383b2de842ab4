"""Webhook signatures, replays, limits; the post-receive hook; bursts coalescing; GitHub statuses; metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from mesh.gitops.daemon import Daemon, DaemonSettings
from mesh.gitops.github import GitHubStatus
from mesh.gitops.metrics import Metrics
from mesh.gitops.reconciler import Reconciler, Settings
from mesh.gitops.source import SourceSpec
from mesh.gitops.state import StateStore
from mesh.gitops.triggers import TriggerServer, WebhookConfig, check_delivery, install_hook
from tests.unit.verify.fakemesh import FakeTarget

from .gitrepo import GIT_ENV, PolicyRepo

SECRET = b"s3cret"


def signed(body: bytes, delivery: str = "d-1", secret: bytes = SECRET) -> dict[str, str]:
    sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery, "X-GitHub-Event": "push"}


def push(ref: str = "refs/heads/main", repo: str = "acme/policies") -> bytes:
    return json.dumps({"ref": ref, "repository": {"full_name": repo}}).encode()


def config() -> WebhookConfig:
    return WebhookConfig(secret=SECRET, envs={"dev": "main", "prod": "v*"}, repo="acme/policies")


def test_only_a_valid_signature_is_accepted() -> None:
    cfg, body = config(), push()
    assert check_delivery(cfg, signed(body), body) == (202, "reconciling dev", ["dev"])
    assert check_delivery(cfg, {"X-GitHub-Delivery": "d-2"}, body)[0] == 401
    sha1 = {"X-Hub-Signature": "sha1=" + hmac.new(SECRET, body, hashlib.sha1).hexdigest(), "X-GitHub-Delivery": "d-3"}
    assert check_delivery(cfg, sha1, body)[:2] == (401, "SHA-1 signatures are not accepted")
    assert check_delivery(cfg, signed(body, "d-4", b"wrong"), body)[:2] == (401, "bad signature")
    assert check_delivery(cfg, signed(body, "d-5"), body + b" ")[0] == 401  # the body was changed in transit


def test_replays_wrong_repository_and_ref_are_refused() -> None:
    cfg, body = config(), push()
    assert check_delivery(cfg, signed(body, "same"), body)[0] == 202
    assert check_delivery(cfg, signed(body, "same"), body)[:2] == (400, "replayed delivery same")
    other = push(repo="evil/policies")
    assert check_delivery(cfg, signed(other, "x"), other)[0] == 400
    tag = push("refs/tags/v1.2")
    assert check_delivery(cfg, signed(tag, "t"), tag)[2] == ["prod"]
    feature = push("refs/heads/feature")
    assert check_delivery(cfg, signed(feature, "f"), feature)[2] == []


def test_the_server_answers_413_for_big_bodies_and_counts_answers() -> None:
    triggered: list[str] = []
    metrics = Metrics()
    server = TriggerServer(("127.0.0.1", 0), triggered.append, metrics, config())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        big = b"x" * (config().max_body + 1)
        assert requests.post(url + "/webhook", data=big, headers=signed(big, "big"), timeout=5).status_code == 413
        body = push()
        assert requests.post(url + "/webhook", data=body, headers={}, timeout=5).status_code == 401
        assert triggered == []
        assert requests.post(url + "/webhook", data=body, headers=signed(body, "ok"), timeout=5).status_code == 202
        assert triggered == ["dev"]
        text = requests.get(url + "/metrics", timeout=5).text
        assert 'meshops_webhook_requests_total{code="401"} 1' in text and 'code="413"' in text
    finally:
        server.shutdown()
        server.server_close()


class _Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, dict[str, Any], str]] = []

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append((self.path, body, self.headers["Authorization"]))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_commit_statuses_are_posted_to_the_configured_api(tmp_path: Path) -> None:
    """Against a local server recording the calls: the live GitHub API is not exercised here."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        repo = PolicyRepo.create(tmp_path)
        gh = GitHubStatus(repo="acme/policies", token="t0k", api=f"http://127.0.0.1:{server.server_address[1]}")
        spec = SourceSpec(env="dev", repo=str(repo.origin), path="policies")
        r = Reconciler(spec, FakeTarget(), StateStore(tmp_path / "s.db"), tmp_path / "c", Settings(github=gh))
        result = r.reconcile()
        assert result.action == "applied"
        paths = [c[0] for c in _Recorder.calls]
        assert paths == [f"/repos/acme/policies/statuses/{result.sha}"] * 2
        assert [c[1]["state"] for c in _Recorder.calls] == ["pending", "success"]
        assert _Recorder.calls[0][1]["context"] == "meshops/dev" and _Recorder.calls[0][2] == "Bearer t0k"
    finally:
        server.shutdown()
        server.server_close()


def test_a_push_through_the_hook_reconciles_and_bursts_coalesce(tmp_path: Path) -> None:
    repo = PolicyRepo.create(tmp_path)
    spec = SourceSpec(env="dev", repo=str(repo.origin), path="policies")
    target = FakeTarget()
    r = Reconciler(spec, target, StateStore(tmp_path / "s.db"), tmp_path / "c", Settings(verify=False))
    sock = tmp_path / "run" / "hook.sock"
    install_hook(repo.origin, sock)
    results: list[Any] = []
    daemon = Daemon([r], DaemonSettings(poll=3600, hook_socket=sock), results.append)
    daemon.start()
    try:
        deadline = time.monotonic() + 60
        while not results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert results and results[0].action == "applied"
        with r.locked():  # a reconcile is running while ten pushes land
            for weight in (10, 20, 30, 40, 45, 50, 55, 65, 70, 60):
                last = repo.set_dev_weight(weight)  # each push runs the hook
        while r.store.env("dev").last_applied != last and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.store.env("dev").last_applied == last
        applied = [{d.destination.subset: d.weight for d in _reviews(c).http[-1].route} for c in target.applies]
        assert applied == [{"v1": 50, "v3": 50}, {"v1": 40, "v3": 60}]  # the newest once, nothing in between
    finally:
        daemon.shutdown()


def _reviews(config: Any) -> Any:
    return next(v for v in config.virtual_services if v.name == "reviews")


def test_install_hook_refuses_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    from mesh.errors import SourceError

    with pytest.raises(SourceError, match="not a git repository"):
        install_hook(tmp_path, tmp_path / "s.sock")


def test_unsafe_sources_are_refused_before_git_runs(tmp_path: Path) -> None:
    from mesh.errors import UnsafeSource
    from mesh.gitops.source import check_ref, check_url

    for url in ("ext::sh -c touch% /tmp/pwned", "fd::17", "--upload-pack=touch /tmp/x", "-oProxyCommand=x"):
        with pytest.raises(UnsafeSource):
            check_url(url)
    with pytest.raises(UnsafeSource):
        check_ref("--upload-pack=x")
    repo = PolicyRepo.create(tmp_path)
    (repo.work / ".gitmodules").write_text('[submodule "x"]\n\tpath = x\n\turl = https://example.com/x.git\n')
    repo.commit("a remote submodule")
    spec = SourceSpec(env="dev", repo=str(repo.origin), path="policies")
    r = Reconciler(spec, FakeTarget(), StateStore(tmp_path / "s.db"), tmp_path / "c")
    result = r.reconcile()
    assert result.outcome == "failed render" and "submodules with remote URLs" in result.reason
    assert subprocess.run(["git", "--version"], env=GIT_ENV, capture_output=True).returncode == 0

"""GitOps on the real local mesh: git repositories in temp dirs, the reconciler driving the session's mesh through
the Target protocol, and what users observe measured on the data path (sequential tests, both error rates stated).

Every test restores the session mesh's config when it ends. Verification is the expensive step (the sample's 12
derived checks take ~2,000 requests); a reconcile that only sets a test up (the sample as the last good commit)
skips it, since the tests that apply the sample at a new weight verify all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from mesh.gitops.daemon import Daemon, DaemonSettings
from mesh.gitops.reconciler import Reconciler, Settings
from mesh.gitops.render import Limits
from mesh.gitops.source import SourceSpec
from mesh.gitops.state import StateStore
from mesh.gitops.triggers import WebhookConfig
from mesh.harness.stats import assert_sequential_split
from tests.unit.gitops.gitrepo import PolicyRepo

ENV = "e2e"


@pytest.fixture
def target(mesh: Any) -> Iterator[Any]:
    """The session mesh's Target; its config is restored after the test."""
    t = getattr(mesh, "target", None)
    if t is None:
        pytest.fail("these tests need the Target-based harness (mesh.target): merge main")
    try:
        yield t
    finally:
        t.apply(mesh.config)


@pytest.fixture
def repo(tmp_path: Path) -> PolicyRepo:
    return PolicyRepo.create(tmp_path)


def reconciler(repo: PolicyRepo, target: Any, tmp_path: Path, path: str = "policies", **kw: Any) -> Reconciler:
    spec = SourceSpec(env=ENV, repo=str(repo.origin), ref="main", path=path)
    settings = Settings(
        limits=Limits(timeout=kw.pop("timeout", 30)),
        attempts=kw.pop("attempts", 3),
        backoff_max=0.2,
        verify=kw.pop("verify", True),
    )
    return Reconciler(spec, target, StateStore(tmp_path / "state.db"), tmp_path / "cache", settings, print)


def applied_baseline(r: Reconciler) -> None:
    """The sample policies applied as the last good commit, unverified: this only sets the test up, and the sample's
    derived checks are what the pushed-weight and YAML tests verify."""
    r.settings = replace(r.settings, verify=False)
    try:
        assert r.reconcile().action == "applied"
    finally:
        r.settings = replace(r.settings, verify=True)


def reviews(mesh: Any) -> Any:
    client = mesh.ingress("bookinfo.local")
    return lambda: str(client.get("/productpage").call("reviews")["body"]["version"])


def test_a_pushed_canary_weight_changes_the_measured_split(
    mesh: Any, target: Any, repo: PolicyRepo, tmp_path: Path
) -> None:
    r = reconciler(repo, target, tmp_path)
    sha = repo.set_dev_weight(20, ENV)
    result = r.reconcile()
    assert (result.action, result.sha) == ("applied", sha), result.reason
    assert_sequential_split(reviews(mesh), {"v1": 80, "v3": 20}, parallel=4)
    assert r.store.env(ENV).last_applied == sha


def test_an_analyzer_rejected_push_changes_nothing(mesh: Any, target: Any, repo: PolicyRepo, tmp_path: Path) -> None:
    r = reconciler(repo, target, tmp_path)
    applied_baseline(r)
    before = target.status().revision
    init = repo.work / "policies" / "__init__.py"
    init.write_text(init.read_text().replace('{"v1": 100 - weight', '{"v4": 100 - weight'))
    repo.commit("route to a subset nobody defined")
    result = r.reconcile()
    assert result.outcome == "failed analysis" and "IST0101" in result.reason
    assert target.status().revision == before
    assert_sequential_split(reviews(mesh), {"v1": 50, "v3": 50}, parallel=4)


def test_a_verification_failure_rolls_back_to_the_last_good_split(
    mesh: Any, target: Any, repo: PolicyRepo, tmp_path: Path
) -> None:
    r = reconciler(repo, target, tmp_path)
    applied_baseline(r)
    init = repo.work / "policies" / "__init__.py"
    # v3 is told (by a request header the sample app honours) to answer 500: analysis cannot know, the data path does
    init.write_text(
        init.read_text()
        .replace(
            'default=h.split("reviews", {"v1": 100 - weight, "v3": weight}, name="canary")',
            'default=HTTPRoute(name="canary", route=[h.to("reviews", "v1", weight=100 - weight), '
            'HTTPRouteDestination(destination=Destination(host="reviews", subset="v3"), weight=weight, '
            'headers=Headers(request=HeaderOperations(set={"x-status": "500"})))])',
        )
        .replace(
            "from mesh.api import (",
            "from mesh.api import (\n    Destination,\n    HTTPRouteDestination,\n    Headers,\n    HeaderOperations,",
        )
    )
    sha = repo.commit("v3 answers 500")
    result = r.reconcile()
    assert result.outcome == "rolled back", result.reason
    attempt = r.store.latest_attempt(ENV, sha)
    assert attempt is not None and any(not e["ok"] and "status 500" in e["detail"] for e in attempt.evidence)
    assert_sequential_split(reviews(mesh), {"v1": 50, "v3": 50}, parallel=4)  # the last good split serves again
    assert r.reconcile().action == "skipped"


def test_deleted_policy_is_pruned_and_out_of_band_changes_are_healed(
    mesh: Any, target: Any, repo: PolicyRepo, tmp_path: Path
) -> None:
    r = reconciler(repo, target, tmp_path)
    applied_baseline(r)
    init = repo.work / "policies" / "__init__.py"
    init.write_text("\n".join(x for x in init.read_text().splitlines() if "allow_only_from(ratings" not in x) + "\n")
    repo.commit("ratings open to every caller")
    result = r.reconcile()
    assert result.action == "applied", result.reason
    assert not any(x.name == "ratings-allow-callers" for x in target.live_config().resources)
    assert mesh.from_pod(mesh.pods("productpage")[0]).get("http://ratings:9080/").status == 200
    # someone applies by hand: 90% to v3
    from mesh.api import helpers as h

    live = target.live_config()
    live.resources = [x for x in live.resources if not (x.kind == "VirtualService" and x.name == "reviews")]
    live.add(h.canary("reviews", stable="v1", candidate="v3", weight=90))
    target.apply(live)
    healed = r.reconcile()
    assert healed.action == "healed" and "VirtualService default/reviews" in healed.reason
    assert_sequential_split(reviews(mesh), {"v1": 50, "v3": 50}, parallel=4)


def test_a_policies_module_that_loops_forever_fails_by_time_limit(
    mesh: Any, target: Any, repo: PolicyRepo, tmp_path: Path
) -> None:
    r = reconciler(repo, target, tmp_path, timeout=3)
    repo.write("policies/__init__.py", "while True:\n    pass\n")
    repo.commit("loop")
    result = r.reconcile()
    assert result.outcome == "failed render" and "did not finish within 3s" in result.reason
    assert mesh.ingress("bookinfo.local").get("/productpage").status == 200


def test_an_unreachable_remote_backs_off_then_recovers(
    mesh: Any, target: Any, repo: PolicyRepo, tmp_path: Path
) -> None:
    r = reconciler(repo, target, tmp_path, attempts=2)
    applied_baseline(r)
    sha = repo.set_dev_weight(20, ENV)
    hidden = repo.origin.with_name("away.git")
    shutil.move(repo.origin, hidden)
    try:
        assert r.reconcile().action == "transient"
        state = r.store.env(ENV)
        assert state.transient_since is not None and "cannot reach" in (state.transient_error or "")
        assert_sequential_split(
            reviews(mesh), {"v1": 50, "v3": 50}, parallel=4
        )  # the last applied config keeps serving
    finally:
        shutil.move(hidden, repo.origin)
    assert r.reconcile().sha == sha
    assert r.store.env(ENV).transient_since is None


def test_webhook_bad_missing_or_replayed_signatures_fetch_nothing(
    target: Any, repo: PolicyRepo, tmp_path: Path
) -> None:
    # about signatures and wake-ups: the cycles' verification is not asserted here (the tests above assert it)
    r = reconciler(repo, target, tmp_path, verify=False)
    secret = b"e2e-secret"
    webhook = WebhookConfig(secret=secret, envs={ENV: "main"}, repo="acme/policies")
    daemon = Daemon([r], DaemonSettings(poll=3600, listen=("127.0.0.1", 0), webhook=webhook))
    daemon.start()
    try:
        import time

        deadline = time.monotonic() + 60
        while daemon.cycles[ENV] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        host, port = daemon.address or ("", 0)
        url = f"http://{host}:{port}/webhook"
        body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": "acme/policies"}}).encode()
        good = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        bad = "sha256=" + hmac.new(b"nope", body, hashlib.sha256).hexdigest()
        for headers, expect in (
            ({"X-GitHub-Delivery": "1"}, 401),
            ({"X-Hub-Signature-256": bad, "X-GitHub-Delivery": "2"}, 401),
        ):
            assert requests.post(url, data=body, headers=headers, timeout=5).status_code == expect
        assert daemon.cycles[ENV] == 1  # nothing woke the reconciler
        ok = {"X-Hub-Signature-256": good, "X-GitHub-Delivery": "3", "X-GitHub-Event": "push"}
        assert requests.post(url, data=body, headers=ok, timeout=5).status_code == 202
        while daemon.cycles[ENV] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests.post(url, data=body, headers=ok, timeout=5).status_code == 400  # replayed
    finally:
        daemon.shutdown()


def test_a_yaml_directory_source_works(mesh: Any, target: Any, tmp_path: Path) -> None:
    from mesh.compile.render import dump_yaml, render_istio

    repo = PolicyRepo.create(tmp_path)
    config = mesh.config
    text = dump_yaml(render_istio(config))
    assert text.count("weight: 50") == 2  # reviews v1/v3 in the e2e policies
    text = text.replace("weight: 50", "weight: 70", 1).replace("weight: 50", "weight: 30", 1)
    repo.write("istio/mesh.yaml", text)
    repo.commit("istio as plain YAML")
    r = reconciler(repo, target, tmp_path, path="istio")
    result = r.reconcile()
    assert result.action == "applied", result.reason
    assert_sequential_split(reviews(mesh), {"v1": 70, "v3": 30}, parallel=4)


def test_a_reconciler_killed_mid_apply_converges_on_restart(
    mesh: Any, target: Any, repo: PolicyRepo, tmp_path: Path
) -> None:
    """`mesh reconcile once` as a real process, SIGKILLed once the new config serves but before the outcome is
    recorded (the attempt still `applying`): a restart marks that attempt interrupted and converges."""
    import os
    import signal
    import subprocess
    import sys
    import time

    state_dir = Path(target.options.state_dir)
    gitops_dir = state_dir / "gitops"
    assert not gitops_dir.exists(), f"{gitops_dir} exists: another test left reconciler state in the session mesh"
    cmd = [
        sys.executable,
        "-c",
        "from mesh.cli import main; main()",
        "reconcile",
        "once",
        "--repo",
        str(repo.origin),
        "--env",
        ENV,
    ]
    cmd += ["--state-dir", str(state_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    sha = repo.set_dev_weight(20, ENV)
    before = target.status().revision
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while target.status().revision == before:  # the new config is live on every proxy: verification runs
            assert proc.poll() is None, f"the reconciler ended before applying: {proc.communicate()[0]}"
            assert time.monotonic() < deadline, "the reconciler did not apply within 120 s"
            time.sleep(0.02)
        store = StateStore(gitops_dir / "state.db")
        attempt = store.latest_attempt(ENV, sha)
        assert attempt is not None and attempt.outcome == "applying", attempt
        assert store.env(ENV).last_applied != sha
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the reconciler finished before it could be killed mid-apply"
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        outcomes = [(a.sha, a.outcome) for a in store.attempts(ENV)]
        assert (sha, "interrupted") in outcomes and (sha, "applied") in outcomes, outcomes
        assert store.env(ENV).last_applied == sha
        assert_sequential_split(reviews(mesh), {"v1": 80, "v3": 20}, parallel=4)
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(gitops_dir, ignore_errors=True)
